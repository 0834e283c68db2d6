"""What the tests that run `hookline serve` as a subprocess share: a free port, a config
for the real plugins against the loopback fakes, starting the process, and waiting for a
probe to answer."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import IO

import httpx
import trio

from hookline_testkit.stack import FakeStack

GREETING = "Thanks for calling. How can I help?"


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


def serve_config(
    tmp_path: Path,
    stack: FakeStack,
    port: int,
    *,
    drain_timeout_s: float = 1.0,
    analytics: str = "enabled = false",
    extra: str = "",
) -> Path:
    """`agent.toml` for the stack's providers on 127.0.0.1:`port`; `analytics` is the
    body of `[analytics]`, `extra` more sections."""
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""
[agent]
name = "Riverside Auto Service"
greeting = "{GREETING}"

{stack.providers_toml()}
[server]
host = "127.0.0.1"
port = {port}
drain_timeout_s = {drain_timeout_s}

[analytics]
{analytics}
{extra}"""
    )
    return config


async def start_process(
    nursery: trio.Nursery, argv: Sequence[str], *, env: dict[str, str], stderr: IO[bytes] | int
) -> trio.Process:
    """Start `argv` as a child of `nursery`: its stderr to `stderr` (a file or descriptor),
    its stdout dropped; a non-zero exit is left to the test to read, not raised."""
    run = partial(
        trio.run_process, argv, env=env, stderr=stderr, stdout=subprocess.DEVNULL, check=False
    )
    return await nursery.start(run)


async def wait_ok(url: str, timeout_s: float = 30.0) -> None:
    """Until `url` answers 200 (a probe of a server that is starting)."""
    with trio.move_on_after(timeout_s):
        async with httpx.AsyncClient() as client:
            while True:
                try:
                    if (await client.get(url)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.05)
    raise AssertionError(f"{url} never answered 200 within {timeout_s:g} s")

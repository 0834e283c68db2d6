"""Checks that a client's TLS setup is built once and off the trio thread.

`tls_context_builds` (a pytest fixture) records the thread of every
`ssl.create_default_context()` call during a test; `serve_tls_sink` is a TCP listener
that keeps the first bytes each client sends (a TLS ClientHello starts with 0x16) and
hangs up, so a `wss://` client can be pointed at it without a certificate.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator

import pytest
import trio

__all__ = ["serve_tls_sink", "tls_context_builds"]


@pytest.fixture
def tls_context_builds(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The thread ids of the `ssl.create_default_context()` calls made in the test."""
    built_on: list[int] = []
    create = ssl.create_default_context

    def counting(*args: object, **kwargs: object) -> ssl.SSLContext:
        built_on.append(threading.get_ident())
        return create(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl, "create_default_context", counting)
    yield built_on


async def serve_tls_sink(
    hellos: list[bytes], *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Listen on 127.0.0.1 (the port goes to `task_status`); record each client's first
    bytes in `hellos` and hang up."""

    async def hang_up(stream: trio.SocketStream) -> None:
        async with stream:
            hellos.append(await stream.receive_some(5))

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(hang_up, listeners)

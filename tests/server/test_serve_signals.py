"""`hookline serve` as a process under repeated signals, and streams that arrive late.

A second SIGTERM or SIGINT during the drain must not cut it short of what the drain
promises: every active call hears the goodbye, is hung up through the REST API and
is recorded with its end reason; no traceback, exit status 0 (issue 10, item 8).
"""

from __future__ import annotations

import os
import re
import signal
import sys

import pytest
import trio

from hookline_testkit.stack import FakeStack

from .serving import free_port, serve_config, start_process, wait_ok

CALLS = 3


def _write_config(tmp_path, stack: FakeStack, port: int, drain_timeout_s: float) -> str:
    return str(serve_config(tmp_path, stack, port, drain_timeout_s=drain_timeout_s))


async def _start_serve(nursery, config: str, stack: FakeStack, stderr):
    return await start_process(
        nursery,
        [sys.executable, "-m", "hookline.cli", "serve", config],
        env={**os.environ, **stack.env()},
        stderr=stderr,
    )


async def _wait_for_line(path, pattern: str) -> None:
    # Polling: the server is another process, its log file is all there is to watch.
    while not re.search(pattern, path.read_text()):  # noqa: ASYNC110
        await trio.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_second_signal_during_the_drain_still_ends_every_call_properly(
    tmp_path, nursery, fake_stack, twilio_sim, signum
):
    port = free_port()
    # A grace far longer than the test: only the second signal can end the calls.
    config = _write_config(tmp_path, fake_stack, port, drain_timeout_s=600)
    stderr = tmp_path / "stderr.log"
    calls = []
    in_call = trio.Semaphore(0)

    async def one_call() -> None:
        async with twilio_sim.call(f"http://127.0.0.1:{port}/twilio/voice") as call:
            calls.append(call)
            await call.wait_for_audio()
            await call.wait_until_quiet()
            in_call.release()
            await call.wait_closed()  # the drain's goodbye, then its hang-up

    with stderr.open("wb") as err:
        proc = await _start_serve(nursery, config, fake_stack, err)
        try:
            with trio.fail_after(90):
                await wait_ok(f"http://127.0.0.1:{port}/readyz")
                async with trio.open_nursery() as callers:
                    for _ in range(CALLS):
                        callers.start_soon(one_call)
                    for _ in range(CALLS):
                        await in_call.acquire()
                    proc.send_signal(signum)
                    await _wait_for_line(stderr, r"draining \d+ active call")
                    proc.send_signal(signum)
                    with trio.move_on_after(10):
                        await _wait_for_line(stderr, "again: ending")
                    if proc.returncode is None:
                        proc.send_signal(signum)  # a third changes nothing either
                await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
    log = stderr.read_text()
    assert proc.returncode == 0, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert "still ending" in log, log[-3000:]
    # Every caller heard the goodbye and was hung up through the REST API...
    assert [c.ended_by_rest for c in calls] == ["completed"] * CALLS, log[-3000:]
    assert all(c.agent_seconds > 0 for c in calls)
    # ...and every call was recorded as ended by the shutdown.
    ended = re.findall(r"call ended: (\S+)", log)
    assert ended == ["shutdown"] * CALLS, log[-3000:]
    assert "stopped" in log

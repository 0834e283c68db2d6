"""`kill -9` between the write and the delivery, then a restart: the notification is
delivered once — not twice, not never. Real processes, a real SIGKILL, a loopback
webhook receiver that is down while the first process tries."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import trio

from hookline.outbox import OutboxStore, notification_id
from hookline.server import serve_asgi

sys.path.insert(0, str(Path(__file__).parent))

from outbox_child import KEY, SECRET
from webhook_receiver import PATH, Receiver

CHILD = Path(__file__).with_name("outbox_child.py")


async def _start(db: Path, url: str, mode: str) -> trio.Process:
    return await trio.lowlevel.open_process(
        [sys.executable, str(CHILD), str(db), url, mode],
        stdout=subprocess.PIPE,
        cwd=str(CHILD.parent),
    )


async def _kill(process: trio.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGKILL)
    with trio.fail_after(30):
        await process.wait()
    assert process.returncode == -signal.SIGKILL


async def _reap_on_exit(started: list[trio.Process]) -> None:
    """Kill whatever child is still running when the test ends, passed or failed."""
    try:
        await trio.sleep_forever()
    finally:
        for process in started:
            if process.returncode is None:
                process.kill()


async def _until(condition, within_s: float = 60.0) -> None:
    with trio.fail_after(within_s):
        while True:
            if condition():
                return
            await trio.sleep(0.05)


async def test_killed_before_delivery_is_delivered_once_after_restart(tmp_path):
    db = tmp_path / "outbox.duckdb"
    receiver = Receiver(SECRET, down=True)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_asgi, receiver.app(), "127.0.0.1", 0)
        url = f"http://127.0.0.1:{port}{PATH}"

        started: list[trio.Process] = []
        nursery.start_soon(_reap_on_exit, started)

        # 1. Written and committed; the shop's system is down, so not delivered; kill -9.
        first = await _start(db, url, "enqueue")
        started.append(first)
        assert first.stdout is not None
        line = b""
        with trio.fail_after(60):
            while b"\n" not in line:
                line += await first.stdout.receive_some(200)
        assert line.startswith(b"committed " + notification_id(KEY).encode())
        await _until(lambda: len(receiver.received) >= 1)
        await _kill(first)
        assert receiver.accepted == []
        (row,) = OutboxStore(db).recent_sync()
        assert row.status == "pending" and row.sent is None  # killed mid-attempt or after

        # 2. The shop's system is back; a restarted process delivers it.
        receiver.down = False
        second = await _start(db, url, "resume")
        started.append(second)
        await _until(lambda: OutboxStore(db).recent_sync()[0].status == "sent")
        await trio.sleep(1.0)  # time for a wrong second delivery
        await _kill(second)

        # 3. Another restart sends nothing more.
        third = await _start(db, url, "resume")
        started.append(third)
        await trio.sleep(1.5)
        await _kill(third)
        nursery.cancel_scope.cancel()

    assert len(receiver.accepted) == 1
    (delivered,) = receiver.accepted
    assert delivered.headers["x-hookline-id"] == notification_id(KEY)
    assert b'"text":"Booked"' in delivered.body
    (row,) = OutboxStore(db).recent_sync()
    assert row.status == "sent" and row.sent is not None

"""The analytics folder on a full disk: calls go on, the writer says so once, keeps a
bounded backlog in memory, /healthz reports not ready, and everything pending is written
(each call's row with its end reason) when space returns.

The disk is a real 4 MB tmpfs when it can be mounted (root); otherwise the writer's
storage fails by injection with the error DuckDB raises on a full disk."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest
import trio

from hookline.analytics import plugin as analytics_plugin
from hookline.analytics import writer as writer_module
from hookline.analytics.plugin import sink_for
from hookline.runtime import Runtime
from hookline.server import build_app
from hookline.testing.harness import make_config, scripted_runtime
from hookline_testkit.simulate import simulate_calls

CALLS = 30


class Disk:
    """The filesystem holding the database: `fill()` takes its last byte, `free()` gives
    the space back."""

    def __init__(self, path: Path, *, real: bool, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path = path
        self.real = real
        self.full = False
        self._filler = path / "filler"
        if not real:
            write = writer_module.Writer._write

            def failing_write(writer: writer_module.Writer, batches: dict) -> None:
                if self.full:
                    raise duckdb.TransactionException(
                        f'Failed to commit: Could not write file "{writer.path}.wal": '
                        "No space left on device"
                    )
                write(writer, batches)

            monkeypatch.setattr(writer_module.Writer, "_write", failing_write)

    def fill(self) -> None:
        self.full = True
        if not self.real:
            return
        chunk = b"\0" * 65536
        with open(self._filler, "wb", buffering=0) as f:
            while True:
                try:
                    f.write(chunk)
                except OSError as e:
                    assert e.errno == errno.ENOSPC
                    if len(chunk) == 1:
                        return
                    chunk = chunk[: len(chunk) // 2]

    def free(self) -> None:
        self.full = False
        if self.real:
            self._filler.unlink()


@pytest.fixture(params=["tmpfs", "injected"])
def disk(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Disk]:
    mount = tmp_path / "disk"
    mount.mkdir()
    real = False
    if request.param == "tmpfs":  # falls back to injection where mounting is not allowed
        cmd = ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)]
        with contextlib.suppress(OSError):
            real = subprocess.run(cmd, capture_output=True).returncode == 0
    try:
        yield Disk(mount, real=real, monkeypatch=monkeypatch)
    finally:
        if real:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


async def runtime_on(disk: Disk) -> Runtime:
    config = make_config(
        analytics={"enabled": True, "database": str(disk.path / "calls.duckdb"), "events": True}
    )
    return await scripted_runtime(config, plugins=[analytics_plugin])


async def healthz(runtime: Runtime) -> tuple[int, dict]:
    """GET /healthz through the server's ASGI app."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/healthz", "headers": []}
    await build_app(runtime)(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body)


def analytics_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "hookline.analytics" and r.levelno == level
    ]


async def polled(condition: Callable[[], bool]) -> None:
    """Wait until `condition()` holds: it changes on the writer thread, which cannot
    set a trio.Event."""
    while not condition():  # noqa: ASYNC110
        await trio.sleep(0.02)


def stored_calls(path: Path) -> dict[str, str | None]:
    con = duckdb.connect(str(path))
    try:
        return dict(con.execute("SELECT id, end_reason FROM calls").fetchall())
    finally:
        con.close()


async def test_a_full_disk_degrades_once_reports_unhealthy_and_recovers(disk, caplog):
    caplog.set_level(logging.INFO, logger="hookline")
    runtime = await runtime_on(disk)
    sink = sink_for(runtime)
    assert sink is not None
    assert await healthz(runtime) == (
        200,
        {"status": "ok", "active_calls": 0, "draining": False, "problems": []},
    )
    disk.fill()
    records = simulate_calls(runtime, CALLS)
    await sink.wait_flushed()
    problems = runtime.health_problems()
    assert len(problems) == 1 and "cannot write" in problems[0], problems
    status, body = await healthz(runtime)
    assert status == 503 and body["status"] == "unhealthy" and body["problems"] == problems
    errors = analytics_lines(caplog, logging.ERROR)
    assert len(errors) == 1 and "cannot write" in errors[0], errors  # loud, once
    await sink.wait_flushed()  # an explicit flush tries again, and fails again quietly
    assert len(analytics_lines(caplog, logging.ERROR)) == 1

    disk.free()
    await sink.wait_flushed()
    assert runtime.health_problems() == []
    assert (await healthz(runtime))[0] == 200
    recovered = analytics_lines(caplog, logging.WARNING)
    assert any("writing to" in line and "again" in line for line in recovered), recovered
    await trio.to_thread.run_sync(runtime.stop)
    stored = stored_calls(disk.path / "calls.duckdb")
    # Every call, each with its end reason: nothing was lost while the disk was full.
    assert stored == {r.call_id: r.end_reason for r in records}
    assert len(analytics_lines(caplog, logging.ERROR)) == 1


async def test_writes_resume_by_themselves_when_space_returns(disk, caplog, monkeypatch):
    monkeypatch.setattr(writer_module, "RETRY_FIRST_S", 0.05)
    monkeypatch.setattr(writer_module, "RETRY_MAX_S", 0.2)
    runtime = await runtime_on(disk)
    sink = sink_for(runtime)
    assert sink is not None
    disk.fill()
    records = simulate_calls(runtime, CALLS)
    with trio.fail_after(60):
        await polled(lambda: bool(runtime.health_problems()))
        disk.free()  # no flush asked for from here on: the retry timer does it
        await polled(lambda: not runtime.health_problems())
    await trio.to_thread.run_sync(runtime.stop)
    assert stored_calls(disk.path / "calls.duckdb") == {r.call_id: r.end_reason for r in records}


async def test_the_memory_backlog_is_bounded_and_drops_raw_events_first(disk, caplog, monkeypatch):
    monkeypatch.setattr(writer_module, "MAX_PENDING_ROWS", 300)
    caplog.set_level(logging.INFO, logger="hookline")
    runtime = await runtime_on(disk)
    sink = sink_for(runtime)
    assert sink is not None
    disk.fill()
    records = simulate_calls(runtime, CALLS)
    await sink.wait_flushed()
    w = sink.writer
    assert w.dropped_rows > 0
    assert w.backlog == 0  # the queue is drained: what waits is bounded, staged rows
    dropping = [line for line in analytics_lines(caplog, logging.ERROR) if "dropping" in line]
    assert len(dropping) == 1, analytics_lines(caplog, logging.ERROR)
    disk.free()
    await sink.wait_flushed()
    await trio.to_thread.run_sync(runtime.stop)
    # The calls rows are the last to go: all 30 made it, with their end reasons.
    assert stored_calls(disk.path / "calls.duckdb") == {r.call_id: r.end_reason for r in records}
    con = duckdb.connect(str(disk.path / "calls.duckdb"))
    try:
        ((rows,),) = con.execute(
            "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM turns) "
            "+ (SELECT count(*) FROM latencies) + (SELECT count(*) FROM tool_calls) "
            "+ (SELECT count(*) FROM calls)"
        ).fetchall()
    finally:
        con.close()
    assert rows <= 300
    assert any("dropped" in line for line in analytics_lines(caplog, logging.WARNING))

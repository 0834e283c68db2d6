"""Parquet segments: finished calls of several processes read as one dataset."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest
import trio

from hookline.analytics import plugin, segments
from hookline.cli import main
from hookline.config import AnalyticsConfig
from hookline.events import CallRecord
from hookline.providers import CallInfo
from hookline_testkit.simulate import observer_runtime, simulate_calls

CONFIG = """
[agent]
name = "Riverside Auto Service"

[providers]
telephony = "twilio"
stt = "deepgram"
llm = "openai"
tts = "deepgram"

[analytics]
database = "{database}"
segments = "{segments}"
"""


def write_config(tmp_path: Path, database: Path, folder: Path) -> Path:
    path = tmp_path / "hookline.toml"
    path.write_text(CONFIG.format(database=database, segments=folder))
    return path


async def record(database: Path, folder: Path, n: int, seed: int) -> list:
    runtime = observer_runtime(database, analytics=AnalyticsConfig(segments=str(folder)))
    await runtime.start()
    records = simulate_calls(runtime, n, days=2, seed=seed)
    await trio.to_thread.run_sync(runtime.stop)
    return records


def listed(capsys: pytest.CaptureFixture[str], config: Path) -> list[str]:
    assert main(["calls", str(config), "--limit", "1000"]) == 0
    out = capsys.readouterr().out
    return [line.split()[0] for line in out.splitlines()[2:]]


async def test_segments_of_two_processes_read_as_one(tmp_path, capsys):
    folder = tmp_path / "shared"
    one = await record(tmp_path / "a" / "calls.worker0.duckdb", folder, 6, seed=1)
    two = await record(tmp_path / "b" / "calls.worker1.duckdb", folder, 5, seed=2)
    assert len(list((folder / "calls").glob("*.parquet"))) == 2
    config = write_config(tmp_path, tmp_path / "a" / "calls.worker0.duckdb", folder)

    ids = listed(capsys, config)
    assert sorted(ids) == sorted(r.call_id for r in one + two)

    rec = next(r for r in two if r.turns)  # the other process's call, in full
    assert main(["calls", str(config), "show", rec.call_id]) == 0
    out = capsys.readouterr().out
    assert f"call {rec.call_id}" in out and rec.turns[0].text in out

    con = segments.open_dataset(folder)
    try:
        ((turns,),) = con.execute("SELECT count(*) FROM turns").fetchall()
        ((days,),) = con.execute("SELECT sum(calls) FROM daily_calls").fetchall()
    finally:
        con.close()
    assert turns == sum(len(r.turns) for r in one + two)
    assert days == len(one) + len(two)


async def test_a_crash_and_restart_count_every_call_once(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "segments"
    database = tmp_path / "calls.duckdb"
    write = segments.SegmentWriter.write

    def crash_before_forgetting(self, con):
        """The files land, then the process dies before the calls leave the pending list."""
        n = write(self, con)
        con.execute(
            "INSERT INTO segment_pending SELECT id FROM calls WHERE end_reason IS NOT NULL"
        ).fetchall()
        return n

    monkeypatch.setattr(segments.SegmentWriter, "write", crash_before_forgetting)
    runtime = observer_runtime(database, analytics=AnalyticsConfig(segments=str(folder)))
    await runtime.start()
    records = simulate_calls(runtime, 4, days=1, seed=3)
    assert plugin.sink_for(runtime).flush()  # an explicit flush writes the segment now
    plugin.detach(runtime, abandon=True)  # killed: nothing more written
    monkeypatch.setattr(segments.SegmentWriter, "write", write)
    # A segment cut off mid-write leaves its temporary file behind.
    (folder / "calls" / ".dead-000001.parquet.tmp").write_bytes(b"PAR1 half a file")

    restarted = await record(database, folder, 3, seed=4)  # writes the pending calls again

    assert len(list((folder / "calls").glob("*.parquet"))) >= 2  # the same calls twice
    ids = listed(capsys, write_config(tmp_path, database, folder))
    assert sorted(ids) == sorted(r.call_id for r in records + restarted)
    con = segments.open_dataset(folder)
    try:
        ((turns,),) = con.execute("SELECT count(*) FROM turns").fetchall()
    finally:
        con.close()
    assert turns == sum(len(r.turns) for r in records + restarted)


def test_calls_reads_while_a_server_holds_its_database(tmp_path, capsys):
    folder = tmp_path / "segments"
    database = tmp_path / "calls.duckdb"
    holder = textwrap.dedent(
        f"""
        import sys, trio
        from hookline.analytics import plugin
        from hookline.config import AnalyticsConfig
        from hookline_testkit.simulate import observer_runtime, simulate_calls

        async def main():
            rt = observer_runtime({str(database)!r},
                                  analytics=AnalyticsConfig(segments={str(folder)!r}))
            await rt.start()
            records = simulate_calls(rt, 3, days=1, seed=5)
            assert plugin.sink_for(rt).flush()
            print(" ".join(r.call_id for r in records), flush=True)
            sys.stdin.readline()  # hold the file until the test is done
            await trio.to_thread.run_sync(rt.stop)

        trio.run(main)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        ids = child.stdout.readline().split()
        assert len(ids) == 3
        config = write_config(tmp_path, database, folder)
        assert sorted(listed(capsys, config)) == sorted(ids)
        # The file itself is locked by the other process: only the segments are readable.
        assert main(["calls", "--database", str(database)]) == 1
        assert "in use by another process" in capsys.readouterr().err
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=60)
    assert child.returncode == 0


def test_off_and_default_folders(tmp_path):
    config = write_config(tmp_path, tmp_path / "data" / "calls.duckdb", tmp_path / "x")
    from hookline.config import load_config

    loaded = load_config(str(config))
    assert loaded.analytics_segments == tmp_path / "x"
    loaded.analytics.segments = ""
    assert loaded.analytics_segments == tmp_path / "data" / "segments"
    loaded.analytics.segments = "off"
    assert loaded.analytics_segments is None


async def test_the_standalone_dashboard_reads_every_process(tmp_path):
    from hookline.dashboard import Analytics
    from hookline.dashboard.data import CallFilter

    folder = tmp_path / "shared"
    one = await record(tmp_path / "a" / "calls.duckdb", folder, 3, seed=6)
    two = await record(tmp_path / "b" / "calls.duckdb", folder, 2, seed=7)
    analytics = Analytics(lambda: segments.open_dataset(folder), "UTC", keep_open=False)
    rows, total = await analytics.calls(CallFilter())
    assert {r["id"] for r in rows} == {r.call_id for r in one + two}
    assert total == len(one) + len(two)
    rec = next(r for r in two if r.turns)
    call = await analytics.call(rec.call_id)
    assert call is not None


async def test_prune_removes_segments_of_old_calls_only(tmp_path, capsys):
    import time

    folder = tmp_path / "segments"
    database = tmp_path / "calls.duckdb"
    runtime = observer_runtime(database, analytics=AnalyticsConfig(segments=str(folder)))
    await runtime.start()
    simulate_calls(runtime, 3, days=1, seed=8, now=time.time() - 20 * 86400)
    assert plugin.sink_for(runtime).flush()  # the old calls' segment
    recent = simulate_calls(runtime, 2, days=1, seed=9)
    await trio.to_thread.run_sync(runtime.stop)
    config = write_config(tmp_path, database, folder)

    assert main(["analytics", "prune", str(config), "--older-than", "10"]) == 0
    assert "1 segments removed" in capsys.readouterr().out
    assert sorted(listed(capsys, config)) == sorted(r.call_id for r in recent)


async def test_segments_off_writes_none(tmp_path):
    folder = tmp_path / "segments"
    runtime = observer_runtime(tmp_path / "calls.duckdb", analytics=AnalyticsConfig(segments="off"))
    await runtime.start()
    simulate_calls(runtime, 2, days=1, seed=10)
    writer = plugin.sink_for(runtime).writer
    assert writer.flush()
    assert writer.segments is None and writer._segment_due is None  # nothing to wait for
    await trio.to_thread.run_sync(runtime.stop)
    assert not folder.exists() and not (tmp_path / "segments").exists()


def test_reading_the_dataset_logs_nothing(tmp_path, caplog):
    """`hookline calls` builds an in-memory schema over the segments each time it runs:
    the user saw "analytics schema migrated to version 1 ... 4" on every listing."""
    folder = tmp_path / "segments"
    folder.mkdir()
    with caplog.at_level(logging.INFO, logger="hookline"):
        segments.open_dataset(folder).close()
    assert [r.getMessage() for r in caplog.records] == []


async def test_a_workers_dashboard_shows_every_workers_calls(tmp_path):
    """/admin in one of `hookline serve --workers N` reads the shared segments: the calls
    another worker took are there, not only this worker's own file."""
    from hookline.dashboard import analytics_for
    from hookline.dashboard.data import CallFilter

    folder = tmp_path / "shared"
    other = await record(tmp_path / "calls.worker1.duckdb", folder, 5, seed=2)
    runtime = observer_runtime(
        tmp_path / "calls.worker0.duckdb", analytics=AnalyticsConfig(segments=str(folder))
    )
    analytics, source = analytics_for(runtime)
    assert source == "live"  # the process alone: its own file, up to the last call
    analytics.close()
    runtime.worker_index = 0
    await runtime.start()
    try:
        analytics, source = analytics_for(runtime)
        assert source == "workers"
        rows, total = await analytics.calls(CallFilter())
        assert total == len(other)
        assert sorted(r["id"] for r in rows) == sorted(r.call_id for r in other)
        # The dataset stays open between queries; a later segment is read all the same.
        later = await record(tmp_path / "calls.worker1.duckdb", folder, 3, seed=3)
        rows, total = await analytics.calls(CallFilter())
        assert sorted(r["id"] for r in rows) == sorted(r.call_id for r in other + later)
        analytics.close()
    finally:
        await trio.to_thread.run_sync(runtime.stop)


async def test_a_batch_saved_row_by_row_still_lists_its_finished_calls(tmp_path, caplog):
    """A flush DuckDB refuses is retried row by row; the calls that made it in are then
    listed for a segment on that path too (and a refused one is not)."""
    folder = tmp_path / "segments"
    runtime = observer_runtime(
        tmp_path / "a.duckdb", analytics=AnalyticsConfig(segments=str(folder))
    )
    await runtime.start()

    def record(call_id: str, tokens: float) -> CallRecord:
        return CallRecord(
            call_id=call_id, provider_call_id="", from_number="", to_number="",
            started=1_700_000_000.0, ended=1_700_000_001.0, end_reason="caller_hangup",
            providers={}, usage={"llm_prompt_tokens": tokens},
        )  # fmt: skip

    with caplog.at_level(logging.ERROR, logger="hookline.analytics"):
        runtime.call_ended(CallInfo(call_id="bad1"), record("bad1", 1e30))  # not a BIGINT
        for n in range(3):
            runtime.call_ended(CallInfo(call_id=f"good{n}"), record(f"good{n}", 100))
        await trio.to_thread.run_sync(runtime.stop)
    assert any("retrying row by row" in r.message for r in caplog.records)
    rows = duckdb.execute(
        f"SELECT id FROM read_parquet('{folder / 'calls' / '*.parquet'}') ORDER BY id"
    ).fetchall()
    assert rows == [("good0",), ("good1",), ("good2",)]

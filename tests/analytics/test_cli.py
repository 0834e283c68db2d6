"""`hookline calls`, `hookline calls show`, `hookline analytics export` and `prune`."""

from __future__ import annotations

import sys
import textwrap
import time
from functools import partial
from pathlib import Path
from subprocess import PIPE

import duckdb
import pytest
import trio

from hookline.cli import main
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
database = "data/calls.duckdb"
"""


@pytest.fixture
async def recorded(db: Path) -> list:
    """Ten simulated calls over the last 3 days, in `db` (data/calls.duckdb)."""
    runtime = observer_runtime(db)
    await runtime.start()
    records = simulate_calls(runtime, 10, days=3)
    await trio.to_thread.run_sync(runtime.stop)
    return records


@pytest.fixture
def config(db: Path) -> Path:
    path = db.parent.parent / "hookline.toml"  # database = "data/calls.duckdb" next to it
    path.write_text(CONFIG)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_calls_lists_recent_calls_from_the_config_database(recorded, config, capsys):
    code, out, _ = run(capsys, "calls", str(config), "--limit", "4")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["id", "started", "(UTC)"]
    assert len(lines) == 2 + 4
    newest = sorted(recorded, key=lambda r: r.started, reverse=True)[:4]
    assert [line.split()[0] for line in lines[2:]] == [r.call_id for r in newest]


async def test_calls_show_prints_the_transcript_and_latencies(recorded, db, capsys):
    rec = next(r for r in recorded if any(t.interrupted for t in r.turns))
    code, out, _ = run(capsys, "calls", "--database", str(db), "show", rec.call_id)
    assert code == 0
    assert f"call {rec.call_id}" in out and rec.end_reason in out
    for turn in rec.turns:
        assert turn.text in out
    barged = next(t for t in rec.turns if t.interrupted)
    assert f"interrupted; the caller heard: {barged.heard_text}" in out
    v2v = round(barged.metrics["voice_to_voice"])
    assert f"voice-to-voice {v2v}" in out


async def test_calls_show_errors_are_one_line(recorded, db, capsys):
    code, _, err = run(capsys, "calls", "--database", str(db), "show", "nope")
    assert code == 1 and err == "hookline: no call with id 'nope' (see `hookline calls`)\n"
    code, _, err = run(capsys, "calls", "--database", str(db), "show", "sim")
    assert code == 1 and "matches 10 calls; give more of the id" in err
    code, _, err = run(capsys, "calls", "--database", str(db.parent / "missing.duckdb"))
    assert code == 1 and "no analytics database at" in err and err.count("\n") == 1
    code, _, err = run(capsys, "calls")
    assert code == 1 and "give a CONFIG file or --database PATH" in err


async def test_export_then_query_the_parquet_together(recorded, db, config, tmp_path, capsys):
    out_dir = tmp_path / "export"
    code, out, _ = run(capsys, "analytics", "export", str(config), str(out_dir))
    assert code == 0 and out.startswith("10 calls,")
    days = sorted(p.name for p in (out_dir / "calls").iterdir())
    assert len(days) == 3 and all(d.startswith("day=") for d in days)
    # A second machine's export lands in the same directory under its own file names.
    other = tmp_path / "other.duckdb"
    runtime = observer_runtime(other)
    await runtime.start()
    simulate_calls(runtime, 4, seed=99)
    await trio.to_thread.run_sync(runtime.stop)
    assert run(capsys, "analytics", "export", "--database", str(other), str(out_dir))[0] == 0
    # Exporting the first one again replaces its files: nothing is counted twice.
    assert run(capsys, "analytics", "export", str(config), str(out_dir))[0] == 0
    con = duckdb.connect()
    glob = str(out_dir / "{}" / "**" / "*.parquet")
    ((calls, ids),) = con.execute(
        "SELECT count(*), count(DISTINCT id) FROM read_parquet(?, hive_partitioning = true)",
        [glob.format("calls")],
    ).fetchall()
    assert calls == ids == 14
    live = duckdb.connect(str(db))
    expected = live.execute(
        "SELECT metric, count(*), round(sum(ms), 3) FROM latencies GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    live.close()
    got = con.execute(
        "SELECT metric, count(*), round(sum(ms), 3) FROM read_parquet(?, hive_partitioning = true) "
        "WHERE call_id LIKE 'sim007%' GROUP BY ALL ORDER BY ALL",
        [glob.format("latencies")],
    ).fetchall()
    assert got == expected
    ((day_type,),) = con.execute(
        "SELECT typeof(day) FROM read_parquet(?, hive_partitioning = true) LIMIT 1",
        [glob.format("turns")],
    ).fetchall()
    assert day_type == "DATE"


async def test_prune_deletes_old_calls_and_all_their_rows(recorded, db, capsys, query):
    live = observer_runtime(db)
    await live.start()
    old_active = CallInfo(call_id="stillon")
    live.call_started(old_active, time.time() - 10 * 86400)  # active: never pruned
    await trio.to_thread.run_sync(live.stop)
    before = query("SELECT count(*) FROM calls WHERE started < now()::TIMESTAMP - INTERVAL 1 DAY")
    code, out, _ = run(capsys, "analytics", "prune", "--database", str(db), "--older-than", "1")
    assert code == 0 and out.startswith("pruned ")
    ids = {i for (i,) in query("SELECT id FROM calls")}
    assert "stillon" in ids
    assert len(ids) == 11 - (before[0][0] - 1)
    for table in ("turns", "latencies", "tool_calls", "events"):
        orphans = query(f"SELECT count(*) FROM {table} WHERE call_id NOT IN (SELECT id FROM calls)")
        assert orphans == [(0,)], table
    code, _, err = run(capsys, "analytics", "prune", "--database", str(db), "--older-than", "-1")
    assert code == 1 and "0 or more" in err


HOLDER = textwrap.dedent(
    """
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])
    print("ready", flush=True)
    time.sleep(30)
    """
)


async def test_a_database_held_by_another_process_is_a_clear_error(recorded, db, tmp_path, capsys):
    script = tmp_path / "hold.py"
    script.write_text(HOLDER)
    async with trio.open_nursery() as nursery:
        cmd = [sys.executable, str(script), str(db)]
        proc = await nursery.start(partial(trio.run_process, cmd, stdout=PIPE, check=False))
        assert (await proc.stdout.receive_some(100)).startswith(b"ready")
        code, _, err = await trio.to_thread.run_sync(run, capsys, "calls", "--database", str(db))
        proc.kill()
    assert code == 1 and "in use by another process" in err and err.count("\n") == 1

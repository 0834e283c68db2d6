"""Schema versions: a fresh file, forward migration of an older file, a newer file refused."""

from __future__ import annotations

from datetime import datetime

import duckdb
import pytest
import trio

from hookline.analytics import schema
from hookline.errors import ConfigError
from hookline_testkit.simulate import observer_runtime, simulate_calls


async def test_a_fresh_file_runs_every_migration_and_has_the_views(db, query):
    runtime = observer_runtime(db)
    await runtime.start()
    await trio.to_thread.run_sync(runtime.stop)
    assert [v for (v,) in query("SELECT version FROM schema_version ORDER BY version")] == [
        1,
        2,
        3,
        4,
    ]
    tables = {t for (t,) in query("SELECT table_name FROM information_schema.tables")}
    assert set(schema.TABLES) | set(schema.VIEWS) | {"schema_version"} <= tables
    for table, columns in schema.TABLES.items():
        got = query(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
            "ORDER BY ordinal_position",
            [table],
        )
        assert tuple(c for (c,) in got) == columns, table


def _v1_file(path) -> None:
    """A database as hookline with schema version 1 left it, with two finished calls."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    assert schema.migrate(con, target=1) == 0
    day = datetime(2026, 3, 2, 14, 0, 0)
    con.execute(
        """INSERT INTO calls VALUES
           ('old1', 'CAold1', ?, ?, 42.0, '+15550001', '+15559870000', 'caller_hangup', 4,
            MAP {'llm': 'openai'}, 900, 60, 400, 42.0, 42.0, NULL),
           ('old2', 'CAold2', ?, NULL, NULL, '+15550002', '+15559870000', NULL, NULL,
            MAP {'llm': 'openai'}, NULL, NULL, NULL, NULL, NULL, NULL)""",
        [day, day.replace(minute=1), day.replace(hour=15)],
    ).fetchall()
    con.execute(
        """INSERT INTO turns VALUES
           ('old1', 0, 'agent', 'Hello, how can I help?', 'Hello,', true, ?, ?, 900),
           ('old1', 1, 'user', 'Book me in', NULL, false, ?, ?, 800),
           ('old1', 2, 'agent', 'Sure. Which day?', 'Sure. Which day?', false, ?, ?, 700),
           ('old1', 3, 'agent', 'Monday works. Tuesday too.', 'Monday works.', true, ?, ?, 700)""",
        [day] * 8,
    ).fetchall()
    con.execute(
        "INSERT INTO latencies VALUES ('old1', 2, ?, 'voice_to_voice', 812.5)", [day]
    ).fetchall()
    con.close()


async def test_an_older_file_is_migrated_forward_on_open(db, query):
    _v1_file(db)
    assert query("SELECT max(version) FROM schema_version") == [(1,)]

    runtime = observer_runtime(db)
    await runtime.start()
    simulate_calls(runtime, 3, kinds=("normal",))
    await trio.to_thread.run_sync(runtime.stop)

    assert [v for (v,) in query("SELECT version FROM schema_version ORDER BY version")] == [
        1,
        2,
        3,
        4,
    ]
    # Old rows are intact; the new column was computed from their turns; no cost invented.
    assert query(
        "SELECT id, end_reason, turns, interrupted_turns, cost_usd, llm_prompt_tokens "
        "FROM calls WHERE id LIKE 'old%' ORDER BY id"
    ) == [
        ("old1", "caller_hangup", 4, 2, None, 900),
        # The v1 call that never ended was caught by the recovery at open.
        ("old2", "interrupted", None, None, None, None),
    ]
    assert query("SELECT ms FROM latencies WHERE call_id = 'old1'") == [(812.5,)]
    # New calls are written in the v2 layout alongside, and the views span both.
    assert query("SELECT count(*) FROM calls WHERE cost_usd > 0") == [(3,)]
    assert (
        datetime(2026, 3, 2).date(),
        "voice_to_voice",
    ) in {(d, m) for d, m in query("SELECT day, metric FROM latency_percentiles")}
    assert query("SELECT calls, interrupted FROM daily_calls WHERE day = DATE '2026-03-02'") == [
        (2, 1)
    ]


async def test_a_newer_file_is_refused_with_a_clear_error(db):
    db.parent.mkdir(parents=True)
    con = duckdb.connect(str(db))
    schema.migrate(con)
    con.execute("INSERT INTO schema_version VALUES (99, NULL)").fetchall()
    con.close()
    runtime = observer_runtime(db)
    with pytest.raises(ConfigError, match="schema version 99, newer than this hookline"):
        await runtime.start()


def test_a_failed_migration_leaves_the_file_at_its_version(tmp_path, monkeypatch):
    path = tmp_path / "x.duckdb"
    con = duckdb.connect(str(path))
    schema.migrate(con, target=1)
    monkeypatch.setattr(schema, "MIGRATIONS", (schema.V1, schema.V2 + "\nSELECT nonsense();"))
    with pytest.raises(duckdb.Error):
        schema.migrate(con)
    assert schema.schema_version(con) == 1
    cols = {c for (c,) in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'calls'"
    ).fetchall()}  # fmt: skip
    assert "cost_usd" not in cols  # the half-applied step was rolled back
    con.close()

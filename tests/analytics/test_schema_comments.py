"""The analytics file explains itself and opens in older DuckDB builds.

Every table, view and column carries a comment (`COMMENT ON`), so any SQL client's
schema browser says what a column means; a new file is written in the storage format
`STORAGE_VERSION`, not the running library's newest, so the DuckDB CLI an analyst has
(1.4 or later, docs/analytics.md) opens it. The check with the old reader itself needs
that wheel, so here the format is asserted from DuckDB's own metadata, read-only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb
import pytest
import trio

from hookline.analytics.schema import STORAGE_VERSION, VIEWS, open_database, storage_version
from hookline_testkit.simulate import observer_runtime, simulate_calls

DOC = Path(__file__).resolve().parents[2] / "docs" / "analytics.md"


async def _record_calls(db: Path) -> None:
    runtime = observer_runtime(db)
    await runtime.start()
    simulate_calls(runtime, 6)
    await trio.to_thread.run_sync(runtime.stop)


def _read_only(db: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(db), read_only=True)


async def test_a_recorded_file_has_a_comment_on_every_table_view_and_column(db: Path) -> None:
    await _record_calls(db)
    con = _read_only(db)
    try:
        tables = con.execute(
            "SELECT table_name, comment FROM duckdb_tables() WHERE NOT internal"
        ).fetchall()
        views = con.execute(
            "SELECT view_name, comment FROM duckdb_views() WHERE NOT internal"
        ).fetchall()
        columns = con.execute(
            "SELECT table_name, column_name, comment FROM duckdb_columns() WHERE NOT internal"
        ).fetchall()
    finally:
        con.close()
    assert {"calls", "turns", "latencies", "tool_calls", "events", "schema_version"} <= {
        name for name, _ in tables
    }
    assert {name for name, _ in views} == set(VIEWS)
    assert [name for name, comment in tables + views if not comment] == []
    assert len(columns) > 100  # every table's and view's columns are there to check
    assert [f"{t}.{c}" for t, c, comment in columns if not comment] == []


def test_comments_survive_a_reopen_that_recreates_the_views(db: Path) -> None:
    open_database(db).close()
    open_database(db).close()  # views are replaced on every open: comments go back on
    con = _read_only(db)
    try:
        missing = con.execute(
            "SELECT table_name, column_name FROM duckdb_columns() "
            "WHERE NOT internal AND (comment IS NULL OR comment = '')"
        ).fetchall()
        ((outcome,),) = con.execute(
            "SELECT comment FROM duckdb_columns() "
            "WHERE table_name = 'call_outcomes' AND column_name = 'outcome'"
        ).fetchall()
    finally:
        con.close()
    assert missing == []
    assert "end_reason" in outcome


async def test_a_new_file_is_written_in_the_pinned_storage_format(db: Path) -> None:
    await _record_calls(db)
    con = _read_only(db)
    try:
        found = storage_version(con)
        ((calls,),) = con.execute("SELECT count(*) FROM calls").fetchall()
    finally:
        con.close()
    assert calls == 6
    # DuckDB tags a file with the oldest release that reads it: "v1.4.0+".
    assert found == f"{STORAGE_VERSION}+"


def test_the_documented_reader_matches_the_storage_format() -> None:
    major_minor = ".".join(STORAGE_VERSION.lstrip("v").split(".")[:2])
    assert f"DuckDB {major_minor} or later" in DOC.read_text(encoding="utf-8")


def test_a_file_in_a_newer_format_is_named_on_open(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db.parent.mkdir(parents=True)
    duckdb.connect(str(db)).close()  # the library's newest format, as before the pin
    with caplog.at_level(logging.WARNING, logger="hookline.analytics"):
        open_database(db).close()
    (line,) = [r.getMessage() for r in caplog.records if "storage format" in r.getMessage()]
    assert str(db) in line and f"STORAGE_VERSION '{STORAGE_VERSION}'" in line


def test_the_plugins_duckdb_files_use_the_pinned_storage_format(tmp_path) -> None:
    # The calendar's local store, the message store and the outbox are DuckDB files too:
    # an analyst's DuckDB CLI opens them as it opens the analytics file.
    from hookline.outbox.store import OutboxStore
    from hookline_calendar_google.local_store import LocalStore
    from hookline_messages.store import MessageStore

    calendar = LocalStore(str(tmp_path / "shop.duckdb"), trio.CapacityLimiter(1), bays=1)
    calendar.warm()
    calendar.close()  # the serving process holds the calendar's file until it closes
    MessageStore(tmp_path / "messages.duckdb").mark_sync("none", "sent")  # creates the file
    OutboxStore(tmp_path / "outbox.duckdb").requeue_sync("none")  # creates the file
    for name in ("shop.duckdb", "messages.duckdb", "outbox.duckdb"):
        with duckdb.connect(str(tmp_path / name), read_only=True) as con:
            assert storage_version(con).startswith(STORAGE_VERSION), name

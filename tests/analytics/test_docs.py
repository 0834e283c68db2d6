"""Every SQL query in docs/analytics.md runs, and returns rows, on a database filled by
simulated calls of every kind (and exported to Parquet for the read_parquet queries)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import duckdb
import pytest
import trio

from hookline.analytics.cli import export
from hookline.analytics.plugin import detach, sink_for
from hookline.providers import CallInfo
from hookline_testkit.simulate import observer_runtime, simulate_calls

DOC = Path(__file__).resolve().parents[2] / "docs" / "analytics.md"
QUERIES = re.findall(r"```sql\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_the_doc_has_at_least_ten_queries():
    assert len(QUERIES) >= 10


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Filled once for all the queries (a sync fixture running its own trio loop)."""
    tmp = tmp_path_factory.mktemp("docs")
    db = tmp / "calls.duckdb"

    async def fill() -> None:
        # A call cut off by a crash, a restart, then 60 calls of every kind over 3 days.
        crashed = observer_runtime(db)
        await crashed.start()
        crashed.call_started(CallInfo(call_id="cutoff", from_number="+15550009999"), time.time())
        await sink_for(crashed).wait_flushed()
        detach(crashed, abandon=True)
        runtime = observer_runtime(db)
        await runtime.start()
        simulate_calls(runtime, 60)
        await trio.to_thread.run_sync(runtime.stop)

    trio.run(fill)
    con = duckdb.connect(str(db))
    export(con, tmp / "export", source="test-host")
    con.close()
    return db


@pytest.mark.parametrize("sql", QUERIES, ids=[f"q{i:02d}" for i in range(len(QUERIES))])
def test_documented_query_runs_and_finds_rows(
    filled: Path, sql: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(filled.parent)  # the docs' read_parquet paths are relative: export/...
    con = duckdb.connect(str(filled), read_only=False)
    try:
        rows = con.execute(sql).fetchall()
    finally:
        con.close()
    assert rows, f"no rows from:\n{sql}"
    assert not all(v is None for row in rows for v in row), f"only NULLs from:\n{sql}"

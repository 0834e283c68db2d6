"""Shared fixtures for the analytics tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from hookline.analytics import writer


@pytest.fixture(autouse=True)
def no_leaked_writers() -> Iterator[None]:
    """Every test closes the writers it opened: nothing survives into the next test."""
    assert not writer._writers, f"writers left open by an earlier test: {list(writer._writers)}"
    yield
    leaked = list(writer._writers.values())
    for w in leaked:  # close them anyway, so one failure does not cascade
        w.users = 1
        writer.release(w)
    assert not leaked, f"test left analytics writers open: {[str(w.path) for w in leaked]}"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "calls.duckdb"


@pytest.fixture
def query(db: Path) -> Callable[..., list[tuple[Any, ...]]]:
    """Run SQL against the test database (a second connection, as an analyst would)."""

    def run(sql: str, params: list[Any] | None = None, path: Path | None = None) -> list[Any]:
        con = duckdb.connect(str(path or db))
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    return run

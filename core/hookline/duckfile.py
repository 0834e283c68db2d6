"""A small DuckDB file that several processes share, opened for one operation at a time.

The outbox and the message store keep durable rows that the server writes and the CLI
(`hookline outbox`, `hookline messages`) reads while the server runs. DuckDB lets one
process hold a file at a time, so each operation opens the file, does its work in an
explicit transaction where it writes, and closes it; a second process waits out that
brief hold. In one process a lock per file keeps the stores' threads in turn.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import trio

from .analytics.schema import connect
from .errors import ProviderUnavailable

__all__ = ["LOCK_WAIT_S", "DuckDBFile"]

LOCK_WAIT_S = 5.0  # how long to wait for another process to release the file

_LOCKS_GUARD = threading.Lock()
_LOCKS: dict[str, threading.Lock] = {}  # one per database file, shared by its stores


class DuckDBFile:
    """`open()` the file (created in the pinned storage format, `schema` applied, UTC)
    from a worker thread; `run(fn, *args)` runs a blocking function in one, behind
    `limiter`, with a database or disk failure raised as ProviderUnavailable."""

    def __init__(
        self,
        path: Path | str,
        schema: str,
        *,
        provider: str,
        limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        self.path = Path(path)
        self.schema = schema
        self.provider = provider
        self.limiter = limiter
        with _LOCKS_GUARD:
            self._lock = _LOCKS.setdefault(str(self.path.resolve()), threading.Lock())

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)
        except (duckdb.Error, OSError) as e:
            raise ProviderUnavailable(f"{self.path}: {e}", provider=self.provider) from e

    @contextlib.contextmanager
    def open(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = _connect_waiting(self.path)
            try:
                con.execute("SET TimeZone = 'UTC'")
                con.execute(self.schema)
                yield con
            finally:
                con.close()


def _connect_waiting(path: Path) -> duckdb.DuckDBPyConnection:
    """Open the file, waiting out another process's brief hold of DuckDB's file lock."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            return connect(path)  # a format the documented DuckDB CLI reads
        except duckdb.IOException as e:
            if "lock" not in str(e).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.02)  # in a worker thread: the trio thread never waits here

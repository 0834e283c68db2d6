"""Where operational state lives: an embedded DuckDB file, or PostgreSQL.

The outbox, taken messages, tow requests and the local calendar keep rows that must
survive the process and, with several processes (`hookline serve --workers N`, or N
machines behind a load balancer), be shared by all of them in transactions. `[storage]`
chooses the engine for all of them at once:

- `backend = "duckdb"` (the default, zero setup): each store has its own DuckDB file
  beside the config, opened for one operation at a time (`hookline.DuckDBFile`), so the
  CLI reads it while the server runs and processes on one machine take turns.
- `backend = "postgresql"`: every store's tables live in one PostgreSQL database named
  by the URL in the environment variable `[storage] url_env`, reached through one
  connection pool per process (psycopg 3 in worker threads behind the runtime's
  limiter; trio never blocks on it). Any number of processes and machines share it.

A store is written once for both: `await db.run(fn, *args)` runs `fn(session, *args)` in
a worker thread as ONE transaction (committed when `fn` returns, rolled back when it
raises); `session.execute(sql, params)` takes SQL with `$1, $2, ...` parameters, the
placeholder style both engines accept, and returns the rows. `session.lock(name)`
serializes writers that check before they write (no double booking): in PostgreSQL it
is a transaction-scoped advisory lock, held by the database across every process until
the transaction ends; a DuckDB file is already held by one operation at a time.
A unique or exclusion constraint refusing a write raises `Conflict`; any other database
or disk failure raises `ProviderUnavailable` naming the store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import trio

from .errors import ConfigError, ProviderUnavailable

__all__ = ["Conflict", "Database", "Schema", "Session", "Storage", "StorageKind"]

T = TypeVar("T")
StorageKind = Literal["duckdb", "postgresql"]
# A store's tables: one DDL script for both engines, or one per engine where they differ.
Schema = str | Mapping[StorageKind, str]
# Serializes schema creation across processes (CREATE TABLE IF NOT EXISTS races in PG).
_SCHEMA_LOCK_KEY = 0x686F6F6B  # "hook"


class Conflict(Exception):
    """A unique or exclusion constraint refused the write: the row (or the slot) exists."""


class Session:
    """One transaction of one store, in a worker thread (see the module docstring)."""

    kind: StorageKind

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def lock(self, name: str) -> None:
        """Hold the lock `name` until this transaction ends, against every process."""
        raise NotImplementedError


class Database:
    """A store's tables on one engine. `run` from trio, `run_sync` from a thread."""

    kind: StorageKind
    provider: str  # who is named in errors ("outbox", "tools/messages")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(self.run_sync, fn, *args, limiter=self._limiter)

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError

    def describe(self) -> str:
        """Where the rows are, for messages (never a password)."""
        raise NotImplementedError

    _limiter: trio.CapacityLimiter | None = None


# ---------------------------------------------------------------- DuckDB


class _DuckSession(Session):
    kind: StorageKind = "duckdb"

    def __init__(self, con: Any) -> None:  # a duckdb.DuckDBPyConnection
        self._con = con

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self._con.execute(sql, list(params))
        return cur.fetchall() if cur.description else []

    def lock(self, name: str) -> None:
        # The file is open for this one operation: no other writer, in this process or
        # another, runs until it is closed (DuckDBFile's lock and DuckDB's file lock).
        return None


class DuckDBDatabase(Database):
    kind: StorageKind = "duckdb"

    def __init__(
        self,
        path: Path | str,
        schema: str,
        *,
        provider: str,
        limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        from .duckfile import DuckDBFile  # DuckDB is imported on first use (see __init__)

        self.path = Path(path)
        self.provider = provider
        self._limiter = limiter
        self._file = DuckDBFile(path, schema, provider=provider, limiter=limiter)

    def describe(self) -> str:
        return str(self.path)

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        import duckdb

        try:
            with self._file.open() as con:
                con.begin()
                try:
                    result = fn(_DuckSession(con), *args)
                    con.commit()
                except BaseException:
                    try:
                        con.rollback()
                    except duckdb.Error:
                        pass  # a failed commit ended the transaction already
                    raise
                return result
        except duckdb.ConstraintException as e:
            raise Conflict(str(e)) from e
        except (duckdb.Error, OSError) as e:
            raise ProviderUnavailable(f"{self.path}: {e}", provider=self.provider) from e


# ---------------------------------------------------------------- PostgreSQL


class _PgSession(Session):
    kind: StorageKind = "postgresql"

    def __init__(self, conn: Any) -> None:
        import psycopg

        self._cur = psycopg.RawCursor(conn)  # $1-style parameters, as DuckDB takes them

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._cur.execute(sql, list(params) if params else None)
        return self._cur.fetchall() if self._cur.description else []

    def lock(self, name: str) -> None:
        self._cur.execute("SELECT pg_advisory_xact_lock(hashtext($1))", [name])


class PostgresDatabase(Database):
    kind: StorageKind = "postgresql"

    def __init__(self, storage: Storage, schema: str, *, provider: str) -> None:
        self._storage = storage
        self._schema = schema
        self._schema_ready = False
        self._schema_guard = threading.Lock()
        self.provider = provider
        self._limiter = storage.limiter

    def describe(self) -> str:
        return self._storage.describe()

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        import psycopg
        import psycopg_pool

        try:
            if not self._schema_ready:
                self._create_schema()
            with self._storage.pool().connection() as conn:  # commits, or rolls back
                return fn(_PgSession(conn), *args)
        except psycopg.errors.IntegrityError as e:
            if isinstance(e, psycopg.errors.UniqueViolation | psycopg.errors.ExclusionViolation):
                raise Conflict(str(e).strip()) from e
            raise ProviderUnavailable(
                f"{self.describe()}: {str(e).strip()}", provider=self.provider
            ) from e
        except (psycopg.Error, psycopg_pool.PoolTimeout, OSError) as e:
            raise ProviderUnavailable(
                f"{self.describe()}: {str(e).strip()}", provider=self.provider
            ) from e

    def _create_schema(self) -> None:
        with self._schema_guard:
            if self._schema_ready:
                return
            with self._storage.pool().connection() as conn:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", [_SCHEMA_LOCK_KEY])
                conn.execute(self._schema)
            self._schema_ready = True


# ---------------------------------------------------------------- the choice


class Storage:
    """`[storage]` for one process: hands each store its `Database`, and owns the one
    PostgreSQL connection pool they share (opened on first use, closed by `close`)."""

    def __init__(
        self,
        kind: StorageKind = "duckdb",
        *,
        url: str = "",
        pool_size: int = 10,
        connect_timeout_s: float = 10.0,
        limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        if kind == "postgresql":
            parts = urlsplit(url)
            if parts.scheme not in ("postgresql", "postgres"):
                raise ConfigError(
                    "storage: the PostgreSQL URL must start with postgresql:// "
                    f"(got {parts.scheme or 'no scheme'}://)",
                    key="storage.url_env",
                )
        self.kind = kind
        self.url = url
        self.pool_size = pool_size
        self.connect_timeout_s = connect_timeout_s
        self.limiter = limiter
        self._pool: Any = None
        self._pool_guard = threading.Lock()

    def database(self, *, file: Path, schema: Schema, provider: str) -> Database:
        """The store's `Database`: its DuckDB `file`, or its tables in PostgreSQL."""
        ddl = schema if isinstance(schema, str) else schema[self.kind]
        if self.kind == "postgresql":
            return PostgresDatabase(self, ddl, provider=provider)
        return DuckDBDatabase(file, ddl, provider=provider, limiter=self.limiter)

    def describe(self) -> str:
        if self.kind == "duckdb":
            return "DuckDB files"
        parts = urlsplit(self.url)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        return f"PostgreSQL {host}{port}{parts.path or '/'}"

    def pool(self) -> Any:
        """The process's connection pool, opened (waiting for one connection) on first use."""
        with self._pool_guard:
            if self._pool is None:
                try:
                    import psycopg_pool
                except ImportError:
                    raise ConfigError(
                        "storage: backend = 'postgresql' needs psycopg: "
                        "pip install 'hookline[postgresql]'",
                        key="storage.backend",
                    ) from None
                pool = psycopg_pool.ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=self.pool_size,
                    open=False,
                    timeout=self.connect_timeout_s,
                    kwargs={"options": "-c TimeZone=UTC"},
                    name="hookline",
                )
                try:
                    pool.open(wait=True, timeout=self.connect_timeout_s)
                except BaseException:
                    pool.close()  # no reconnecting workers left behind; the next use retries
                    raise
                self._pool = pool
            return self._pool

    def close(self) -> None:
        with self._pool_guard:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self.close)

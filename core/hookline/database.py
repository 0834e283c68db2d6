"""Where operational state lives: an embedded DuckDB file, or PostgreSQL.

The outbox, taken messages, tow requests and the local calendar keep rows that must
survive the process and, with several processes (`hookline serve --workers N`, or N
machines behind a load balancer), be shared by all of them in transactions. `[storage]`
chooses the engine for all of them at once:

- `backend = "duckdb"` (the default, zero setup): each store has its own DuckDB file
  beside the config, opened for one operation at a time (`hookline.DuckDBFile`), so the
  CLI reads it while the server runs and processes on one machine take turns; or, for a
  store read on every turn (the local calendar), `held` open by the one process that
  serves calls, which refuses a second process with one line naming PostgreSQL.
- `backend = "postgresql"`: every store's tables live in one PostgreSQL database named
  by the URL in the environment variable `[storage] url_variable`, reached through one
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

__all__ = ["Conflict", "Database", "Schema", "Session", "Storage", "StorageKind", "as_database"]

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

    def close(self) -> None:
        """Let go of what this store holds (a held DuckDB file); the storage's pool is
        closed by `Storage.close`."""

    @property
    def file(self) -> Path | None:
        """The DuckDB file, or None when the rows are in PostgreSQL."""
        return None

    @property
    def limiter(self) -> trio.CapacityLimiter | None:
        """The limiter `run` takes its worker threads from."""
        return self._limiter

    _limiter: trio.CapacityLimiter | None = None


# ---------------------------------------------------------------- DuckDB


class _DuckSession(Session):
    kind: StorageKind = "duckdb"

    def __init__(self, con: Any, locks: _NamedLocks | None = None) -> None:
        self._con = con  # a duckdb connection or cursor
        self._locks = locks  # None: the file is open for this one operation alone
        self._held: list[threading.Lock] = []

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self._con.execute(sql, list(params))
        return cur.fetchall() if cur.description else []

    def lock(self, name: str) -> None:
        # Opened per operation, the file already excludes every other writer, in this
        # process (DuckDBFile's lock) and in others (DuckDB's file lock). A held file is
        # this process's alone, so a lock per name in this process is the whole story.
        if self._locks is not None:
            held = self._locks.get(name)
            held.acquire()
            self._held.append(held)

    def release(self) -> None:
        while self._held:
            self._held.pop().release()


class _NamedLocks:
    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def get(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())


class _HeldFile:
    """A DuckDB file this process keeps open, shared by every held store on it."""

    def __init__(self, con: Any) -> None:
        self.con = con
        self.users = 0
        self.locks = _NamedLocks()
        self.schemas: set[str] = set()  # the DDL scripts already applied


_HELD_GUARD = threading.Lock()
_HELD: dict[str, _HeldFile] = {}


class DuckDBDatabase(Database):
    """A store's DuckDB file. By default it is opened for each operation (the CLI and
    other processes on the machine take turns with the server). `held=True` keeps it
    open in this process (a calendar read 4 ms instead of 29-38 ms, most of which is
    opening the file), for a store read on every turn of a call; another process, the CLI included,
    cannot open it then, and a second server process is refused with one line."""

    kind: StorageKind = "duckdb"

    def __init__(
        self,
        path: Path | str,
        schema: str,
        *,
        provider: str,
        limiter: trio.CapacityLimiter | None = None,
        held: bool = False,
    ) -> None:
        from .duckfile import DuckDBFile  # DuckDB is imported on first use (see __init__)

        self.path = Path(path)
        self.provider = provider
        self.held = held
        self._limiter = limiter
        self._schema = schema
        self._file = DuckDBFile(path, schema, provider=provider, limiter=limiter)
        self._held_file: _HeldFile | None = None

    def describe(self) -> str:
        return str(self.path)

    @property
    def file(self) -> Path | None:
        return self.path

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        import duckdb

        try:
            if self.held:
                return self._run_held(fn, *args)
            with self._file.open() as con:
                return _transaction(con, _DuckSession(con), fn, *args)
        except (duckdb.ConstraintException, duckdb.TransactionException) as e:
            # A held file runs transactions side by side: a write-write conflict on one
            # row means another transaction wrote it first, as a repeated key does.
            raise Conflict(str(e)) from e
        except (duckdb.Error, OSError) as e:
            raise ProviderUnavailable(self._explain(e), provider=self.provider) from e

    def _run_held(self, fn: Callable[..., T], *args: Any) -> T:
        held = self._open_held()
        cur = held.con.cursor()
        session = _DuckSession(cur, held.locks)
        try:
            return _transaction(cur, session, fn, *args)
        finally:
            session.release()
            cur.close()

    def _open_held(self) -> _HeldFile:
        if self._held_file is not None:
            return self._held_file
        from .analytics.schema import connect

        key = str(self.path.resolve())
        with _HELD_GUARD:
            held = _HELD.get(key)
            if held is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                con = connect(self.path)  # a format the documented DuckDB CLI reads
                con.execute("SET TimeZone = 'UTC'")
                held = _HELD[key] = _HeldFile(con)
            if self._schema not in held.schemas:
                held.con.execute(self._schema)
                held.schemas.add(self._schema)
            held.users += 1
            self._held_file = held
            return held

    def close(self) -> None:
        """Let go of a held file (closed when its last store lets go)."""
        with _HELD_GUARD:
            held, self._held_file = self._held_file, None
            if held is None:
                return
            held.users -= 1
            if held.users == 0:
                _HELD.pop(str(self.path.resolve()), None)
                held.con.close()

    def _explain(self, e: Exception) -> str:
        if self.held and "lock" in str(e).lower():
            return (
                f"{self.path} is open in another process (a DuckDB file takes one process): "
                "run one `hookline serve` process (--workers 1), or share the state "
                'through PostgreSQL with [storage] backend = "postgresql" (docs/storage.md)'
            )
        return f"{self.path}: {e}"


def _transaction(con: Any, session: Session, fn: Callable[..., T], *args: Any) -> T:
    import duckdb

    con.begin()
    try:
        result = fn(session, *args)
        con.commit()
    except BaseException:
        try:
            con.rollback()
        except duckdb.Error:
            pass  # a failed commit ended the transaction already
        raise
    return result


# ---------------------------------------------------------------- PostgreSQL


def _psycopg() -> tuple[Any, Any]:
    """psycopg and psycopg_pool, imported on first use (an optional extra), or the one
    line that names the extra."""
    try:
        import psycopg
        import psycopg_pool
    except ImportError:
        raise ConfigError(
            "'postgresql' needs psycopg: pip install 'hookline[postgresql]'",
            key="storage.backend",
        ) from None
    return psycopg, psycopg_pool


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
        psycopg, psycopg_pool = _psycopg()
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


def as_database(
    db: Database | Path | str,
    *,
    schema: Schema,
    provider: str,
    limiter: trio.CapacityLimiter | None = None,
    held: bool = False,
) -> Database:
    """`db` itself, or the DuckDB file at the path `db`: stores take either, so tools,
    tests and the CLI can name a store by its file."""
    if isinstance(db, Database):
        return db
    return Storage("duckdb", limiter=limiter).database(
        file=Path(db), schema=schema, provider=provider, held=held
    )


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
                    key="storage.url_variable",
                )
        self.kind = kind
        self.url = url
        self.pool_size = pool_size
        self.connect_timeout_s = connect_timeout_s
        self.limiter = limiter
        self._pool: Any = None
        self._pool_guard = threading.Lock()
        self._held: list[DuckDBDatabase] = []  # held DuckDB files, let go by close()

    def database(
        self, *, file: Path, schema: Schema, provider: str, held: bool = False
    ) -> Database:
        """The store's `Database`: its DuckDB `file`, or its tables in PostgreSQL.
        `held`: keep the DuckDB file open in this process (see DuckDBDatabase)."""
        ddl = schema if isinstance(schema, str) else schema[self.kind]
        if self.kind == "postgresql":
            return PostgresDatabase(self, ddl, provider=provider)
        db = DuckDBDatabase(file, ddl, provider=provider, limiter=self.limiter, held=held)
        if held:
            self._held.append(db)
        return db

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
                _, psycopg_pool = _psycopg()
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
        while self._held:
            self._held.pop().close()
        with self._pool_guard:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self.close)

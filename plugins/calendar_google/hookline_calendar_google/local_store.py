"""The local backend: bookings in an embedded DuckDB file, for shops without Google and
for the offline demo.

The event id is the table's primary key, so the same deterministic slot-and-bay id that
Google turns into a 409 is a constraint violation here: concurrent calls in one process
race exactly as they would against Google. Each query runs in a worker thread on its own
cursor of one shared connection (DuckDB serialises conflicting writes itself).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import trio

from hookline.errors import ProviderUnavailable

from .schedule import Booking

__all__ = ["LocalStore"]

PROVIDER = "tools/calendar_google"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS appointments (
    id VARCHAR PRIMARY KEY,
    start_at TIMESTAMPTZ NOT NULL,
    end_at TIMESTAMPTZ NOT NULL,
    bay INTEGER,
    service VARCHAR NOT NULL DEFAULT '',
    phone VARCHAR NOT NULL DEFAULT '',
    customer_name VARCHAR NOT NULL DEFAULT '',
    vehicle VARCHAR NOT NULL DEFAULT '',
    notes VARCHAR NOT NULL DEFAULT '',
    call_id VARCHAR NOT NULL DEFAULT '',
    request_id VARCHAR NOT NULL DEFAULT '',
    replaces VARCHAR NOT NULL DEFAULT '',
    status VARCHAR NOT NULL DEFAULT 'confirmed',
    created_at TIMESTAMPTZ NOT NULL
);
"""

# Stores on one file in one process share DuckDB's database instance; creating the
# schema from two of them at once would be a write-write conflict.
_OPEN_LOCK = threading.Lock()

_COLUMNS = (
    "id, start_at, end_at, bay, service, phone, customer_name, vehicle, notes, "
    "call_id, request_id, replaces, status, created_at"
)


class LocalStore:
    def __init__(self, path: Path | str, limiter: trio.CapacityLimiter) -> None:
        self.path = str(path)
        self.limiter = limiter
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._last_created = dt.datetime.min.replace(tzinfo=dt.UTC)
        self._stamp_lock = threading.Lock()
        # Test hook: runs in the insert's worker thread just before the row is written
        # (tests inject delays there to shake out races).
        self.before_insert: Callable[[], None] | None = None

    def _connection(self) -> duckdb.DuckDBPyConnection:
        with _OPEN_LOCK:
            if self._conn is None:
                if self.path != ":memory:":
                    Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                conn = duckdb.connect(self.path)
                conn.execute("SET TimeZone = 'UTC'")
                conn.execute(_SCHEMA)
                self._conn = conn
            return self._conn

    async def _run(self, fn: Any, *args: Any) -> Any:
        def work() -> Any:
            cursor = self._connection().cursor()
            try:
                return fn(cursor, *args)
            finally:
                cursor.close()

        try:
            return await trio.to_thread.run_sync(work, limiter=self.limiter)
        except (duckdb.ConstraintException, duckdb.TransactionException):
            raise  # the id is taken: insert() answers None
        except (duckdb.Error, OSError) as e:
            raise ProviderUnavailable(f"local calendar {self.path}: {e}", provider=PROVIDER) from e

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self.close, limiter=self.limiter)

    def warm(self) -> None:
        self._connection()

    def close(self) -> None:
        with _OPEN_LOCK:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -------------------------------------------------------------- Store

    async def bookings(self, lo: dt.datetime, hi: dt.datetime) -> list[Booking]:
        return await self._run(
            _select,
            "status <> 'cancelled' AND end_at > ? AND start_at < ? ORDER BY start_at, id",
            [lo, hi],
        )

    async def by_phone(self, phone: str, after: dt.datetime) -> list[Booking]:
        return await self._run(
            _select,
            "status <> 'cancelled' AND phone = ? AND end_at > ? ORDER BY start_at, id",
            [phone, after],
        )

    async def get(self, booking_id: str) -> Booking | None:
        rows = await self._run(_select, "id = ?", [booking_id])
        return rows[0] if rows else None

    async def insert(self, booking: Booking) -> Booking | None:
        booking.created = self._stamp()
        try:
            await self._run(self._write, booking)
        except duckdb.ConstraintException:
            return None
        except duckdb.TransactionException:  # a concurrent writer took the same key
            return None
        return booking

    async def cancel(self, booking_id: str) -> bool:
        return await self._run(_cancel, booking_id)

    def _write(self, cur: duckdb.DuckDBPyConnection, booking: Booking) -> None:
        if self.before_insert is not None:
            self.before_insert()
        _insert(cur, booking)

    def _stamp(self) -> dt.datetime:
        # Strictly increasing creation times: the overlap tie-break relies on them.
        with self._stamp_lock:
            now = dt.datetime.now(dt.UTC)
            if now <= self._last_created:
                now = self._last_created + dt.timedelta(microseconds=1)
            self._last_created = now
            return now


def _select(cur: duckdb.DuckDBPyConnection, where: str, params: list[Any]) -> list[Booking]:
    rows = cur.execute(f"SELECT {_COLUMNS} FROM appointments WHERE {where}", params).fetchall()
    return [
        Booking(
            id=r[0],
            start=r[1].astimezone(dt.UTC),
            end=r[2].astimezone(dt.UTC),
            bay=r[3],
            service=r[4],
            phone=r[5],
            customer_name=r[6],
            vehicle=r[7],
            notes=r[8],
            call_id=r[9],
            request_id=r[10],
            replaces=r[11],
            status=r[12],
            created=r[13].astimezone(dt.UTC),
        )
        for r in rows
    ]


def _insert(cur: duckdb.DuckDBPyConnection, b: Booking) -> None:
    cur.execute(
        f"INSERT INTO appointments ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            b.id, b.start, b.end, b.bay, b.service, b.phone, b.customer_name, b.vehicle,
            b.notes, b.call_id, b.request_id, b.replaces, b.status, b.created,
        ],
    )  # fmt: skip


def _cancel(cur: duckdb.DuckDBPyConnection, booking_id: str) -> bool:
    rows = cur.execute(
        "UPDATE appointments SET status = 'cancelled' "
        "WHERE id = ? AND status <> 'cancelled' RETURNING id",
        [booking_id],
    ).fetchall()
    return bool(rows)

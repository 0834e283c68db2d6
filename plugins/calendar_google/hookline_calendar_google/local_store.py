"""The local backend: bookings in an embedded DuckDB file, for shops without Google and
for the offline demo.

No double booking, whatever the timing: `insert` runs as one transaction under a lock
shared by every store on the same file in this process (DuckDB lets one process at a time
open a file for writing), and inside it checks that the booking's bay is free for its
whole span before writing the row. DuckDB's snapshot isolation alone would not do:
two transactions inserting different rows that overlap in time both commit. The event id
is still the primary key, so a repeated id is refused the same way Google's 409 is.
Each query runs in a worker thread on its own cursor of one shared connection.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import trio

from hookline import ProviderUnavailable, connect_duckdb

from .schedule import Booking, free_bays
from .store import SlotTaken
from .vehicle import Vehicle

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
    created_at TIMESTAMPTZ NOT NULL,
    confirmation_code VARCHAR NOT NULL DEFAULT '',
    vehicle_year INTEGER,
    vehicle_make VARCHAR NOT NULL DEFAULT '',
    vehicle_model VARCHAR NOT NULL DEFAULT '',
    vin VARCHAR NOT NULL DEFAULT '',
    plate VARCHAR NOT NULL DEFAULT '',
    mileage INTEGER
);
-- Files written before confirmation codes existed.
ALTER TABLE appointments ADD COLUMN IF NOT EXISTS confirmation_code VARCHAR DEFAULT '';
-- Files written before the vehicle was structured (their `vehicle` text stays as it was).
ALTER TABLE appointments ADD COLUMN IF NOT EXISTS vehicle_year INTEGER;
ALTER TABLE appointments ADD COLUMN IF NOT EXISTS vehicle_make VARCHAR DEFAULT '';
ALTER TABLE appointments ADD COLUMN IF NOT EXISTS vehicle_model VARCHAR DEFAULT '';
ALTER TABLE appointments ADD COLUMN IF NOT EXISTS vin VARCHAR DEFAULT '';
ALTER TABLE appointments ADD COLUMN IF NOT EXISTS plate VARCHAR DEFAULT '';
ALTER TABLE appointments ADD COLUMN IF NOT EXISTS mileage INTEGER;
"""

# Stores on one file in one process share DuckDB's database instance; creating the
# schema from two of them at once would be a write-write conflict.
_OPEN_LOCK = threading.Lock()
# One writer lock per database file, shared by every store on it (guarded by _OPEN_LOCK).
_WRITE_LOCKS: dict[str, threading.Lock] = {}

_COLUMNS = (
    "id, start_at, end_at, bay, service, phone, customer_name, vehicle, notes, "
    "call_id, request_id, replaces, status, created_at, confirmation_code, "
    "vehicle_year, vehicle_make, vehicle_model, vin, plate, mileage"
)


class LocalStore:
    """`bays` is the shop's number of bays: the capacity `insert` enforces."""

    def __init__(self, path: Path | str, limiter: trio.CapacityLimiter, *, bays: int) -> None:
        self.path = str(path)
        self.limiter = limiter
        self.bays = bays
        self._conn: duckdb.DuckDBPyConnection | None = None
        key = self.path if self.path == ":memory:" else str(Path(self.path).resolve())
        with _OPEN_LOCK:
            self._write_lock = _WRITE_LOCKS.setdefault(key, threading.Lock())
        self._last_created = dt.datetime.min.replace(tzinfo=dt.UTC)
        # Test hook: runs in the insert's worker thread just before the row is written
        # (tests inject delays there to shake out races).
        self.before_insert: Callable[[], None] | None = None

    def _connection(self) -> duckdb.DuckDBPyConnection:
        with _OPEN_LOCK:
            if self._conn is None:
                if self.path == ":memory:":
                    conn = duckdb.connect(self.path)
                else:
                    Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                    conn = connect_duckdb(self.path)  # a format the documented CLI reads
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
        """Raises `SlotTaken` when an overlapping booking holds the bay (checked in the
        same transaction as the write, under the file's writer lock)."""
        try:
            stored = await self._run(self._write, booking)
        except (duckdb.ConstraintException, duckdb.TransactionException):
            return None  # the id exists
        if stored is None:
            raise SlotTaken(booking.bay)
        return stored

    async def cancel(self, booking_id: str) -> bool:
        return await self._run(_cancel, booking_id)

    def _write(self, cur: duckdb.DuckDBPyConnection, booking: Booking) -> Booking | None:
        """In a worker thread: check the bay and insert, atomically. None: bay taken."""
        with self._write_lock:
            cur.begin()
            try:
                if self.before_insert is not None:
                    self.before_insert()
                stored = msgspec.structs.replace(booking, created=self._stamp())
                # The id first: a repeated request finds its own booking by it (None).
                _insert(cur, stored)
                if booking.bay is not None and not self._bay_free(cur, booking):
                    cur.rollback()
                    return None
                cur.commit()
            except BaseException:
                with contextlib.suppress(duckdb.Error):  # a failed commit ended it already
                    cur.rollback()
                raise
            return stored

    def _bay_free(self, cur: duckdb.DuckDBPyConnection, booking: Booking) -> bool:
        # The appointment a reschedule replaces does not stand in its own way: it is
        # cancelled right after its replacement is stored.
        around = _select(
            cur,
            "status <> 'cancelled' AND end_at > ? AND start_at < ? AND id NOT IN (?, ?)",
            [booking.start, booking.end, booking.id, booking.replaces],
        )
        return booking.bay in free_bays(around, booking.start, booking.end, self.bays)

    def _stamp(self) -> dt.datetime:
        # Strictly increasing creation times (under the writer lock): informative only,
        # the lock is what keeps bookings apart.
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
            confirmation_code=r[14] or "",
            vehicle_info=Vehicle(
                year=r[15],
                make=r[16] or "",
                model=r[17] or "",
                vin=r[18] or "",
                plate=r[19] or "",
                mileage=r[20],
            ),
        )
        for r in rows
    ]


def _insert(cur: duckdb.DuckDBPyConnection, b: Booking) -> None:
    v = b.vehicle_info
    cur.execute(
        f"INSERT INTO appointments ({_COLUMNS}) VALUES ({', '.join('?' * 21)})",
        [
            b.id, b.start, b.end, b.bay, b.service, b.phone, b.customer_name, b.vehicle,
            b.notes, b.call_id, b.request_id, b.replaces, b.status, b.created,
            b.confirmation_code, v.year, v.make, v.model, v.vin, v.plate, v.mileage,
        ],
    )  # fmt: skip


def _cancel(cur: duckdb.DuckDBPyConnection, booking_id: str) -> bool:
    rows = cur.execute(
        "UPDATE appointments SET status = 'cancelled' "
        "WHERE id = ? AND status <> 'cancelled' RETURNING id",
        [booking_id],
    ).fetchall()
    return bool(rows)

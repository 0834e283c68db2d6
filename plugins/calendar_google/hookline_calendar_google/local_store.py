"""The local backend: bookings in the `appointments` table of a `hookline.Database`, for
shops without Google and for the offline demo. With `[storage] backend = "duckdb"` (the
default) the table is in the embedded file `database` names, held open by the one
process that serves calls (an availability check is read on every booking turn: ~4 ms
on the open file against ~30-40 ms to open it each time; a second process is refused at
start-up with one line naming PostgreSQL); with
`backend = "postgresql"` it is in the shared database, and any number of processes and
machines book against it.

No double booking, whatever the timing or the process: `insert` runs as one transaction
that first takes the lock "calendar_google.appointments" (in PostgreSQL an advisory lock
held by the database until the transaction ends, against every process; with DuckDB a
lock in the one process that holds the file), and inside it checks that the booking's bay
is free for its whole span before it commits the row. Snapshot isolation alone would not
do: two transactions inserting different rows that overlap in time both commit. Nor
would an exclusion constraint: a reschedule stores the replacement before it cancels the
booking it replaces, which may overlap it on the same bay, and a hand-made event takes
one bay without saying which. The event id is the primary key, so a repeated id is
refused the same way Google's 409 is.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import trio

from hookline import Conflict, Database, Session, as_database

from .schedule import Booking, free_bays
from .store import SlotTaken
from .vehicle import Vehicle

__all__ = ["PROVIDER", "SCHEMA", "LocalStore"]

PROVIDER = "tools/calendar_google"
# Held across the check and the write of every insert (see the module docstring).
_LOCK = "calendar_google.appointments"

# One script for both engines (the types and statements both accept).
SCHEMA = """
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

_COLUMNS = (
    "id, start_at, end_at, bay, service, phone, customer_name, vehicle, notes, "
    "call_id, request_id, replaces, status, created_at, confirmation_code, "
    "vehicle_year, vehicle_make, vehicle_model, vin, plate, mileage"
)


class LocalStore:
    """`db` holds the appointments (a path: that DuckDB file, for tools and tests);
    `bays` is the shop's number of bays: the capacity `insert` enforces."""

    checks_bays = True  # insert refuses a taken bay itself (SlotTaken)

    def __init__(
        self,
        db: Database | Path | str,
        limiter: trio.CapacityLimiter | None = None,
        *,
        bays: int,
    ) -> None:
        self.db = as_database(db, schema=SCHEMA, provider=PROVIDER, limiter=limiter, held=True)
        self.bays = bays
        self._stamp_guard = threading.Lock()
        self._last_created = dt.datetime.min.replace(tzinfo=dt.UTC)
        # Test hook: runs in the insert's worker thread, under the lock, just before the
        # row is written (tests inject delays there to shake out races).
        self.before_insert: Callable[[], None] | None = None

    @property
    def file(self) -> Path | None:
        """The DuckDB file, or None when the rows are in PostgreSQL."""
        return self.db.file

    async def aclose(self) -> None:
        self.close()

    def warm(self) -> None:
        """Create the table now (the file, or the pool's first connection), so a bad
        path or an unreachable database stops start-up instead of failing a caller."""
        self.db.run_sync(_nothing)

    def close(self) -> None:
        self.db.close()  # a held DuckDB file; PostgreSQL's pool is the storage's

    # -------------------------------------------------------------- Store

    async def bookings(self, lo: dt.datetime, hi: dt.datetime) -> list[Booking]:
        return await self.db.run(
            _select,
            "status <> 'cancelled' AND end_at > $1 AND start_at < $2 ORDER BY start_at, id",
            [lo, hi],
        )

    async def by_phone(self, phone: str, after: dt.datetime) -> list[Booking]:
        return await self.db.run(
            _select,
            "status <> 'cancelled' AND phone = $1 AND end_at > $2 ORDER BY start_at, id",
            [phone, after],
        )

    async def get(self, booking_id: str) -> Booking | None:
        rows = await self.db.run(_select, "id = $1", [booking_id])
        return rows[0] if rows else None

    def upcoming_sync(self, now: dt.datetime) -> list[Booking]:
        """The live bookings that end after `now`, from synchronous code (start-up, or
        `hookline prompt`); without a DuckDB file yet there are none, and none is made."""
        if self.file is not None and not self.file.exists():
            return []
        return self.db.run_sync(
            _select, "status <> 'cancelled' AND end_at > $1 ORDER BY start_at, id", [now]
        )

    async def insert(self, booking: Booking) -> Booking | None:
        """Raises `SlotTaken` when an overlapping booking holds the bay (checked in the
        same transaction as the write, under the appointments lock)."""
        try:
            return await self.db.run(self._write, booking)
        except Conflict:
            return None  # the id exists

    async def cancel(self, booking_id: str) -> bool:
        return await self.db.run(_cancel, booking_id)

    def _write(self, session: Session, booking: Booking) -> Booking:
        """In a worker thread, one transaction: insert and check the bay. Raising
        (SlotTaken, Conflict) rolls the row back."""
        session.lock(_LOCK)
        if self.before_insert is not None:
            self.before_insert()
        stored = msgspec.structs.replace(booking, created=self._stamp())
        # The id first: a repeated request finds its own booking by it (Conflict).
        _insert(session, stored)
        if booking.bay is not None and not self._bay_free(session, booking):
            raise SlotTaken(booking.bay)
        return stored

    def _bay_free(self, session: Session, booking: Booking) -> bool:
        # The appointment a reschedule replaces does not stand in its own way: it is
        # cancelled right after its replacement is stored.
        around = _select(
            session,
            "status <> 'cancelled' AND end_at > $1 AND start_at < $2 AND id NOT IN ($3, $4)",
            [booking.start, booking.end, booking.id, booking.replaces],
        )
        return booking.bay in free_bays(around, booking.start, booking.end, self.bays)

    def _stamp(self) -> dt.datetime:
        # Strictly increasing creation times in this process: informative only, the
        # lock is what keeps bookings apart.
        with self._stamp_guard:
            now = dt.datetime.now(dt.UTC)
            if now <= self._last_created:
                now = self._last_created + dt.timedelta(microseconds=1)
            self._last_created = now
            return now


def _nothing(session: Session) -> None:
    return None


def _select(session: Session, where: str, params: list[Any]) -> list[Booking]:
    rows = session.execute(f"SELECT {_COLUMNS} FROM appointments WHERE {where}", params)
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


def _insert(session: Session, b: Booking) -> None:
    v = b.vehicle_info
    placeholders = ", ".join(f"${i}" for i in range(1, 22))
    session.execute(
        f"INSERT INTO appointments ({_COLUMNS}) VALUES ({placeholders})",
        [
            b.id, b.start, b.end, b.bay, b.service, b.phone, b.customer_name, b.vehicle,
            b.notes, b.call_id, b.request_id, b.replaces, b.status, b.created,
            b.confirmation_code, v.year, v.make, v.model, v.vin, v.plate, v.mileage,
        ],
    )  # fmt: skip


def _cancel(session: Session, booking_id: str) -> bool:
    rows = session.execute(
        "UPDATE appointments SET status = 'cancelled' "
        "WHERE id = $1 AND status <> 'cancelled' RETURNING id",
        [booking_id],
    )
    return bool(rows)

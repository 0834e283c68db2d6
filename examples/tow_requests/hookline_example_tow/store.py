"""Tow requests in the `[storage]` database: committed before the tool gives the caller
a reference.

With `[storage] backend = "duckdb"` (the default) the requests are in the DuckDB file
`[tools.tow_requests] database`, opened for each operation so the dashboard reads it
while the server runs; with `backend = "postgresql"` the table `tow_requests` lives in
the shared database, written and read by every process and machine.

A request's `id` comes from (call id, tool-call id): the model retrying the same tool
call finds the stored request instead of sending a second truck. The dispatcher marks a
request done (the dashboard's Done button): `done`, `done_at`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from hookline import Config, Database, Session, Storage, decode_section

__all__ = ["PROVIDER", "SCHEMA", "TowStore", "Towed", "store_for"]

PROVIDER = "tools/tow_requests"
SCHEMA = """
CREATE TABLE IF NOT EXISTS tow_requests (
    id VARCHAR PRIMARY KEY,
    reference VARCHAR NOT NULL,
    call_id VARCHAR NOT NULL DEFAULT '',
    received_at TIMESTAMPTZ NOT NULL,
    location VARCHAR NOT NULL,
    vehicle VARCHAR NOT NULL DEFAULT '',
    problem VARCHAR NOT NULL DEFAULT '',
    callback_number VARCHAR NOT NULL DEFAULT '',
    eta_minutes INTEGER NOT NULL,
    done BOOLEAN NOT NULL DEFAULT false,
    done_at TIMESTAMPTZ
);
"""
_COLUMNS = (
    "id, reference, call_id, received_at, location, vehicle, problem, callback_number, "
    "eta_minutes, done, done_at"
)


class Towed(msgspec.Struct, kw_only=True):
    """One tow request as stored (times in UTC)."""

    id: str
    reference: str  # what the caller is told: "T01234"
    call_id: str
    received_at: dt.datetime
    location: str
    vehicle: str
    problem: str
    callback_number: str
    eta_minutes: int
    done: bool = False
    done_at: dt.datetime | None = None


class TowStore:
    """The tow requests of one `hookline.Database`; every method runs in a worker
    thread (`Database.run`), a database failure raises ProviderUnavailable."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, request: Towed) -> tuple[Towed, bool]:
        """Store `request` (committed on return): the stored one and whether it is new."""
        return await self.db.run(_add, request)

    async def recent(self, limit: int = 100) -> list[Towed]:
        """Open requests first, then done ones; newest first within each."""
        return await self.db.run(
            _select, "true ORDER BY done, received_at DESC, id LIMIT $1", [limit]
        )

    async def mark_done(self, reference: str, now: dt.datetime | None = None) -> bool:
        """Mark the request `reference` done; False when there is none."""
        return await self.db.run(_mark_done, reference, now or dt.datetime.now(dt.UTC))


def store_for(config: Config, storage: Storage) -> TowStore:
    """The store of `[tools.tow_requests]` outside a running server (the dashboard's
    reader): `storage` is the config's `[storage]` (`hookline.build_storage(config)`)."""
    from . import TowSettings

    settings = decode_section(
        config, "tools.tow_requests", config.tools.get("tow_requests"), TowSettings
    )
    file = config.resolve_path(settings.database)
    return TowStore(storage.database(file=file, schema=SCHEMA, provider=PROVIDER))


def _add(session: Session, t: Towed) -> tuple[Towed, bool]:
    marks = ", ".join(f"${i}" for i in range(1, 12))
    inserted = session.execute(
        f"INSERT INTO tow_requests ({_COLUMNS}) VALUES ({marks}) "
        "ON CONFLICT (id) DO NOTHING RETURNING id",
        [
            t.id, t.reference, t.call_id, t.received_at, t.location, t.vehicle, t.problem,
            t.callback_number, t.eta_minutes, t.done, t.done_at,
        ],
    )  # fmt: skip
    if inserted:
        return t, True
    (existing,) = _select(session, "id = $1", [t.id])
    return existing, False


def _mark_done(session: Session, reference: str, now: dt.datetime) -> bool:
    rows = session.execute(
        "UPDATE tow_requests SET done = true, done_at = coalesce(done_at, $1) "
        "WHERE reference = $2 RETURNING id",
        [now, reference],
    )
    return bool(rows)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    return value.astimezone(dt.UTC) if value is not None else None


def _select(session: Session, where: str, params: list[Any]) -> list[Towed]:
    rows = session.execute(f"SELECT {_COLUMNS} FROM tow_requests WHERE {where}", params)
    return [
        Towed(
            id=r[0], reference=r[1], call_id=r[2], received_at=r[3].astimezone(dt.UTC),
            location=r[4], vehicle=r[5], problem=r[6], callback_number=r[7],
            eta_minutes=r[8], done=bool(r[9]), done_at=_utc(r[10]),
        )
        for r in rows
    ]  # fmt: skip

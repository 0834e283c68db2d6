"""Notifications in the `[storage]` database: committed before `enqueue` returns,
delivered later.

Each write is one transaction (`hookline.Database.run`): with DuckDB (the default) the
commit reaches the file's write-ahead log before it returns, with PostgreSQL the server
has it durably; either way a process killed with `kill -9` right after `enqueue` leaves
the row for the sender of the next process to deliver.

With DuckDB the file (`outbox.duckdb` beside the analytics file, or `[outbox]
database`) is opened for each operation and closed after it, so `hookline outbox` reads
it while the server runs; with PostgreSQL the tables live in the shared database and
every process's sender works from them.

Several senders (processes, machines) share the rows safely: a sender *claims* the due
notifications it is about to deliver in one transaction that moves their next attempt a
lease ahead (`claim_due`), serialized by `session.lock` (a PostgreSQL advisory lock; a
DuckDB file is held by one operation at a time), so no two senders take the same row.
A sender killed after claiming leaves the row pending; it is due again when the lease
ends (`Outbox` uses twice the send timeout plus 10 s).

Analysts read the table `notifications` (one row per notification: status `pending`,
`sent`, `failed` or `skipped`, attempts, last error, timestamps) and `opt_outs`
(addresses that asked for no more messages on a channel, e.g. an SMS "STOP").
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import msgspec
import trio

from ..database import Database, Session, as_database

__all__ = [
    "SCHEMA",
    "STATUSES",
    "Notification",
    "OutboxStore",
    "Status",
    "notification_id",
]

PROVIDER = "outbox"
# pending: waiting for (another) delivery attempt; sent: the channel accepted it;
# failed: gave up (attempts spent, or refused for good: see last_error);
# skipped: not sent on purpose (the recipient opted out).
Status = Literal["pending", "sent", "failed", "skipped"]
STATUSES: tuple[Status, ...] = ("pending", "sent", "failed", "skipped")

SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    id VARCHAR PRIMARY KEY,
    key VARCHAR NOT NULL,
    channel VARCHAR NOT NULL,
    recipient VARCHAR NOT NULL DEFAULT '',
    kind VARCHAR NOT NULL DEFAULT '',
    body VARCHAR NOT NULL DEFAULT '',
    payload VARCHAR NOT NULL DEFAULT '{}',
    call_id VARCHAR NOT NULL DEFAULT '',
    status VARCHAR NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error VARCHAR NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    sent_at TIMESTAMPTZ
);
CREATE TABLE IF NOT EXISTS opt_outs (
    channel VARCHAR NOT NULL,
    address VARCHAR NOT NULL,
    opted_out BOOLEAN NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (channel, address)
);
"""
_COLUMNS = (
    "id, key, channel, recipient, kind, body, payload, call_id, status, attempts, "
    "last_error, created_at, updated_at, next_attempt_at, sent_at"
)

_payload_encode = msgspec.json.Encoder().encode
_payload_decode = msgspec.json.Decoder(dict[str, Any]).decode


def notification_id(key: str) -> str:
    """The id of the notification with idempotency key `key`: the same key, the same id
    (in every process), so a second enqueue finds the first and a receiver can dedupe."""
    return "N" + hashlib.sha256(key.encode()).hexdigest()[:15].upper()


class Notification(msgspec.Struct, kw_only=True):
    """One outbound message. `to`: the channel's address (a phone number for SMS; the
    webhook channel posts to its configured URL and passes `to` along); `body`: the text;
    `payload`: structured data for machine receivers (the webhook's JSON)."""

    id: str
    key: str
    channel: str
    to: str = ""
    body: str = ""
    kind: str = ""  # "booking.confirmed", "message.taken", ...
    payload: dict[str, Any] = {}
    call_id: str = ""
    status: Status = "pending"
    attempts: int = 0
    last_error: str = ""
    created: dt.datetime | None = None
    updated: dt.datetime | None = None
    next_attempt: dt.datetime | None = None
    sent: dt.datetime | None = None


class OutboxStore:
    """The notifications of one `hookline.Database` (or of the DuckDB file at a path).
    Async methods run in a worker thread behind the database's limiter; the `*_sync`
    ones are for code already off the trio thread (the CLI)."""

    def __init__(
        self,
        db: Database | Path | str,
        limiter: trio.CapacityLimiter | None = None,
        *,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.db = as_database(db, schema=SCHEMA, provider=PROVIDER, limiter=limiter)
        # The DuckDB file (None in PostgreSQL): reads of a file not yet made create none.
        self.path = self.db.file
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))

    def describe(self) -> str:
        """Where the rows are (the file, or the PostgreSQL database), for messages."""
        return self.db.describe()

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` (one of the `*_sync` methods) in a worker thread behind the
        database's limiter; a database or disk failure is ProviderUnavailable."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self.db.limiter)

    def _absent(self) -> bool:
        return self.path is not None and not self.path.exists()

    # -------------------------------------------------------------- writes

    def add_sync(self, n: Notification) -> tuple[Notification, bool] | None:
        """Store `n` (committed on return). Returns the stored notification and whether
        it is new; an existing id (the same key) returns the stored one untouched. None,
        storing nothing, when its recipient opted out of its channel."""
        now = self.clock()
        stored = msgspec.structs.replace(
            n, status="pending", attempts=0, created=now, updated=now, next_attempt=now
        )
        return self.db.run_sync(_add, stored)

    def record_attempt_sync(
        self,
        notification_id: str,
        status: Status,
        error: str = "",
        next_attempt: dt.datetime | None = None,
    ) -> dt.datetime:
        """One delivery attempt's outcome: sent, failed for good, skipped, or pending
        again with the time of the next attempt. Returns the row's new `updated`."""
        now = self.clock()
        self.db.run_sync(
            _execute,
            "UPDATE notifications SET status = $1, attempts = attempts + $2, "
            "last_error = $3, updated_at = $4, next_attempt_at = $5, "
            "sent_at = CASE WHEN $6 THEN $7 ELSE sent_at END WHERE id = $8",
            [
                status, 0 if status == "skipped" else 1, error, now, next_attempt or now,
                status == "sent", now, notification_id,
            ],
        )  # fmt: skip
        return now

    def requeue_sync(self, notification_id: str) -> Notification | None:
        """Make a notification pending again, due now (`hookline outbox CONFIG retry ID`);
        its attempts start over. None when there is no such id."""
        return self.db.run_sync(_requeue, notification_id, self.clock())

    def set_opt_out_sync(self, channel: str, address: str, opted_out: bool) -> None:
        self.db.run_sync(
            _execute,
            "INSERT INTO opt_outs VALUES ($1, $2, $3, $4) ON CONFLICT (channel, address) "
            "DO UPDATE SET opted_out = excluded.opted_out, updated_at = excluded.updated_at",
            [channel, address, opted_out, self.clock()],
        )

    def claim_due_sync(self, channels: list[str], limit: int, lease_s: float) -> list[Notification]:
        """Take the pending notifications due now on `channels`, oldest first, for one
        sender: their next attempt moves `lease_s` ahead in the same transaction, so no
        other sender (in any process) takes them until this one records the outcome or
        the lease ends. Returned as they were before the claim."""
        if not channels or self._absent():
            return []
        now = self.clock()
        lease = now + dt.timedelta(seconds=lease_s)
        return self.db.run_sync(_claim_due, channels, limit, now, lease)

    # -------------------------------------------------------------- reads

    def due_sync(self, channels: list[str], limit: int) -> list[Notification]:
        """Pending notifications whose next attempt is due, on `channels`, oldest first
        (a look only: the sender claims with `claim_due_sync`)."""
        if not channels or self._absent():
            return []
        marks = _marks(len(channels), 2)
        return self.db.run_sync(
            _select,
            f"status = 'pending' AND next_attempt_at <= $1 AND channel IN ({marks}) "
            f"ORDER BY created_at, id LIMIT ${len(channels) + 2}",
            [self.clock(), *channels, limit],
        )

    def next_due_sync(self, channels: list[str]) -> dt.datetime | None:
        """When the earliest pending notification on `channels` is due (None: none is)."""
        if not channels or self._absent():
            return None
        rows = self.db.run_sync(
            _execute,
            "SELECT min(next_attempt_at) FROM notifications "
            f"WHERE status = 'pending' AND channel IN ({_marks(len(channels), 1)})",
            channels,
        )
        when = rows[0][0] if rows else None
        return when.astimezone(dt.UTC) if when is not None else None

    def counts_sync(self) -> dict[str, int]:
        """How many notifications are in each status (absent statuses: none)."""
        if self._absent():
            return {}
        rows = self.db.run_sync(
            _execute, "SELECT status, count(*) FROM notifications GROUP BY status", []
        )
        return {status: int(n) for status, n in rows}

    def opted_out_sync(self, channel: str, address: str) -> bool:
        if self._absent():
            return False
        return self.db.run_sync(_opted_out, channel, address)

    def get_sync(self, notification_id: str) -> Notification | None:
        if self._absent():
            return None
        found = self.db.run_sync(_select, "id = $1", [notification_id])
        return found[0] if found else None

    def recent_sync(self, limit: int = 50, status: str | None = None) -> list[Notification]:
        if self._absent():
            return []
        if status:
            return self.db.run_sync(
                _select, "status = $1 ORDER BY created_at DESC, id LIMIT $2", [status, limit]
            )
        return self.db.run_sync(_select, "true ORDER BY created_at DESC, id LIMIT $1", [limit])


# ------------------------------------------------------------------ in one transaction


def _marks(count: int, first: int) -> str:
    """`$first, $first+1, ...`: `count` parameters starting at number `first`."""
    return ", ".join(f"${i}" for i in range(first, first + count))


def _execute(session: Session, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    return session.execute(sql, params)


def _add(session: Session, n: Notification) -> tuple[Notification, bool] | None:
    if n.to and _opted_out(session, n.channel, n.to):
        return None
    inserted = session.execute(
        f"INSERT INTO notifications ({_COLUMNS}) VALUES ({_marks(15, 1)}) "
        "ON CONFLICT (id) DO NOTHING RETURNING id",
        _row(n),
    )
    if inserted:
        return n, True
    (existing,) = _select(session, "id = $1", [n.id])
    return existing, False


def _requeue(session: Session, notification_id: str, now: dt.datetime) -> Notification | None:
    rows = session.execute(
        "UPDATE notifications SET status = 'pending', attempts = 0, last_error = '', "
        "updated_at = $1, next_attempt_at = $2 WHERE id = $3 RETURNING id",
        [now, now, notification_id],
    )
    return _select(session, "id = $1", [notification_id])[0] if rows else None


def _claim_due(
    session: Session, channels: list[str], limit: int, now: dt.datetime, lease: dt.datetime
) -> list[Notification]:
    # Claimers queue here (every process: a PostgreSQL advisory lock until commit), so
    # the SELECT below sees every claim committed before it, and no row is taken twice.
    session.lock("hookline.outbox.claim")
    due = _select(
        session,
        f"status = 'pending' AND next_attempt_at <= $1 AND channel IN ({_marks(len(channels), 2)}) "
        f"ORDER BY created_at, id LIMIT ${len(channels) + 2}",
        [now, *channels, limit],
    )
    if due:
        session.execute(
            f"UPDATE notifications SET next_attempt_at = $1 WHERE id IN ({_marks(len(due), 2)})",
            [lease, *(n.id for n in due)],
        )
    return due


def _opted_out(session: Session, channel: str, address: str) -> bool:
    rows = session.execute(
        "SELECT opted_out FROM opt_outs WHERE channel = $1 AND address = $2", [channel, address]
    )
    return bool(rows and rows[0][0])


def _row(n: Notification) -> list[Any]:
    return [
        n.id, n.key, n.channel, n.to, n.kind, n.body, _payload_encode(n.payload).decode(),
        n.call_id, n.status, n.attempts, n.last_error, n.created, n.updated, n.next_attempt,
        n.sent,
    ]  # fmt: skip


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    return value.astimezone(dt.UTC) if value is not None else None


def _select(session: Session, where: str, params: list[Any]) -> list[Notification]:
    rows = session.execute(f"SELECT {_COLUMNS} FROM notifications WHERE {where}", params)
    return [
        Notification(
            id=r[0], key=r[1], channel=r[2], to=r[3], kind=r[4], body=r[5],
            payload=_payload_decode(r[6]), call_id=r[7], status=r[8], attempts=r[9],
            last_error=r[10], created=_utc(r[11]), updated=_utc(r[12]),
            next_attempt=_utc(r[13]), sent=_utc(r[14]),
        )
        for r in rows
    ]  # fmt: skip

"""Notifications in a DuckDB file: committed before `enqueue` returns, delivered later.

The approach of `hookline_messages.store`: each write is one explicit transaction
(BEGIN, INSERT, COMMIT) and DuckDB's commit reaches its write-ahead log on disk before it
returns, so a process killed with `kill -9` right after `enqueue` still has the row when
the file is opened again, and the sender of the next process delivers it.

The file is opened for each operation and closed after it, so no process holds DuckDB's
file lock between operations: `hookline outbox` can read it while the server runs, and a
crash leaves nothing open. Writers in one process are serialized by a lock per file.

Analysts read the table `notifications` (one row per notification: status `pending`,
`sent`, `failed` or `skipped`, attempts, last error, timestamps) and `opt_outs`
(addresses that asked for no more messages on a channel, e.g. an SMS "STOP").
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import duckdb
import msgspec
import trio

from ..duckfile import DuckDBFile

__all__ = ["STATUSES", "Notification", "OutboxStore", "Status", "notification_id"]

PROVIDER = "outbox"
# pending: waiting for (another) delivery attempt; sent: the channel accepted it;
# failed: gave up (attempts spent, or refused for good: see last_error);
# skipped: not sent on purpose (the recipient opted out).
Status = Literal["pending", "sent", "failed", "skipped"]
STATUSES: tuple[Status, ...] = ("pending", "sent", "failed", "skipped")

_SCHEMA = """
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
    """The notifications of one DuckDB file. Async methods run in a worker thread behind
    `limiter`; the `*_sync` ones are for code already off the trio thread (the CLI)."""

    def __init__(
        self,
        path: Path | str,
        limiter: trio.CapacityLimiter | None = None,
        *,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.path = Path(path)
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._file = DuckDBFile(path, _SCHEMA, provider=PROVIDER, limiter=limiter)
        self._open = self._file.open

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` (one of the `*_sync` methods) in a worker thread; a database or
        disk failure becomes ProviderUnavailable."""
        return await self._file.run(fn, *args)

    # -------------------------------------------------------------- writes

    def add_sync(self, n: Notification) -> tuple[Notification, bool] | None:
        """Store `n` (committed on return). Returns the stored notification and whether
        it is new; an existing id (the same key) returns the stored one untouched. None,
        storing nothing, when its recipient opted out of its channel."""
        now = self.clock()
        stored = msgspec.structs.replace(
            n, status="pending", attempts=0, created=now, updated=now, next_attempt=now
        )
        with self._open() as con:
            if n.to and _opted_out(con, n.channel, n.to):
                return None
            con.begin()
            try:
                inserted = con.execute(
                    f"INSERT INTO notifications ({_COLUMNS}) VALUES ({', '.join('?' * 15)}) "
                    "ON CONFLICT (id) DO NOTHING RETURNING id",
                    _row(stored),
                ).fetchall()
                con.commit()
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    con.rollback()
                raise
            if inserted:
                return stored, True
            (existing,) = _select(con, "id = ?", [n.id])
            return existing, False

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
        with self._open() as con:
            con.execute(
                "UPDATE notifications SET status = ?, attempts = attempts + ?, "
                "last_error = ?, updated_at = ?, next_attempt_at = ?, "
                "sent_at = CASE WHEN ? THEN ? ELSE sent_at END WHERE id = ?",
                [
                    status, 0 if status == "skipped" else 1, error, now, next_attempt or now,
                    status == "sent", now, notification_id,
                ],
            )  # fmt: skip
        return now

    def requeue_sync(self, notification_id: str) -> Notification | None:
        """Make a notification pending again, due now (`hookline outbox CONFIG retry ID`);
        its attempts start over. None when there is no such id."""
        now = self.clock()
        with self._open() as con:
            rows = con.execute(
                "UPDATE notifications SET status = 'pending', attempts = 0, last_error = '', "
                "updated_at = ?, next_attempt_at = ? WHERE id = ? RETURNING id",
                [now, now, notification_id],
            ).fetchall()
            return _select(con, "id = ?", [notification_id])[0] if rows else None

    def set_opt_out_sync(self, channel: str, address: str, opted_out: bool) -> None:
        with self._open() as con:
            con.execute(
                "INSERT INTO opt_outs VALUES (?, ?, ?, ?) ON CONFLICT (channel, address) "
                "DO UPDATE SET opted_out = excluded.opted_out, updated_at = excluded.updated_at",
                [channel, address, opted_out, self.clock()],
            )

    # -------------------------------------------------------------- reads

    def due_sync(self, channels: list[str], limit: int) -> list[Notification]:
        """Pending notifications whose next attempt is due, on `channels`, oldest first."""
        if not channels or not self.path.exists():
            return []
        marks = ", ".join("?" * len(channels))
        with self._open() as con:
            return _select(
                con,
                f"status = 'pending' AND next_attempt_at <= ? AND channel IN ({marks}) "
                "ORDER BY created_at, id LIMIT ?",
                [self.clock(), *channels, limit],
            )

    def next_due_sync(self, channels: list[str]) -> dt.datetime | None:
        """When the earliest pending notification on `channels` is due (None: none is)."""
        if not channels or not self.path.exists():
            return None
        marks = ", ".join("?" * len(channels))
        with self._open() as con:
            (when,) = con.execute(
                "SELECT min(next_attempt_at) FROM notifications "
                f"WHERE status = 'pending' AND channel IN ({marks})",
                channels,
            ).fetchone() or (None,)
            return when.astimezone(dt.UTC) if when is not None else None

    def opted_out_sync(self, channel: str, address: str) -> bool:
        if not self.path.exists():
            return False
        with self._open() as con:
            return _opted_out(con, channel, address)

    def get_sync(self, notification_id: str) -> Notification | None:
        if not self.path.exists():
            return None
        with self._open() as con:
            found = _select(con, "id = ?", [notification_id])
            return found[0] if found else None

    def recent_sync(self, limit: int = 50, status: str | None = None) -> list[Notification]:
        if not self.path.exists():
            return []
        with self._open() as con:
            if status:
                return _select(
                    con, "status = ? ORDER BY created_at DESC, id LIMIT ?", [status, limit]
                )
            return _select(con, "true ORDER BY created_at DESC, id LIMIT ?", [limit])


def _opted_out(con: duckdb.DuckDBPyConnection, channel: str, address: str) -> bool:
    row = con.execute(
        "SELECT opted_out FROM opt_outs WHERE channel = ? AND address = ?", [channel, address]
    ).fetchone()
    return bool(row and row[0])


def _row(n: Notification) -> list[Any]:
    return [
        n.id, n.key, n.channel, n.to, n.kind, n.body, _payload_encode(n.payload).decode(),
        n.call_id, n.status, n.attempts, n.last_error, n.created, n.updated, n.next_attempt,
        n.sent,
    ]  # fmt: skip


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    return value.astimezone(dt.UTC) if value is not None else None


def _select(con: duckdb.DuckDBPyConnection, where: str, params: list[Any]) -> list[Notification]:
    rows = con.execute(f"SELECT {_COLUMNS} FROM notifications WHERE {where}", params).fetchall()
    return [
        Notification(
            id=r[0], key=r[1], channel=r[2], to=r[3], kind=r[4], body=r[5],
            payload=_payload_decode(r[6]), call_id=r[7], status=r[8], attempts=r[9],
            last_error=r[10], created=_utc(r[11]), updated=_utc(r[12]),
            next_attempt=_utc(r[13]), sent=_utc(r[14]),
        )
        for r in rows
    ]  # fmt: skip

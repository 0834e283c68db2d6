"""Taken messages in the `[storage]` database: committed before the tool says "message
taken".

Each message is written in one transaction (`hookline.Database.run`): DuckDB's commit
reaches the file's write-ahead log before it returns, PostgreSQL's the server's, so a
process killed right after the tool answered still has the row.

With DuckDB (the default) the file (`[tools.messages] database`) is opened for each
operation and closed after it, so `hookline messages` and the dashboard read it while the
server runs; with PostgreSQL the table `messages` lives in the shared database, written
and read by every process.

Ids are derived from (call id, tool-call id): the model retrying the same tool call maps
to the same id, and the second insert finds the first row instead of adding another.

Delivery (issue 13's outbox) reads `pending()` and records the outcome with `mark()`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import msgspec
import trio

from hookline import Database, Session, as_database

__all__ = ["SCHEMA", "STATUSES", "Message", "MessageStore", "message_id"]

PROVIDER = "tools/messages"
# `new`: taken, not yet handed on; `sent`: delivered to the shop's notification path;
# `failed`: delivery gave up (see `last_error`); `handled`: someone called back.
STATUSES = ("new", "sent", "failed", "handled")
Urgency = Literal["routine", "urgent"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id VARCHAR PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL,
    call_id VARCHAR NOT NULL DEFAULT '',
    tool_call_id VARCHAR NOT NULL DEFAULT '',
    name VARCHAR NOT NULL,
    callback_number VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    urgency VARCHAR NOT NULL DEFAULT 'routine',
    status VARCHAR NOT NULL DEFAULT 'new',
    updated_at TIMESTAMPTZ NOT NULL,
    last_error VARCHAR NOT NULL DEFAULT ''
);
"""
_COLUMNS = (
    "id, created_at, call_id, tool_call_id, name, callback_number, reason, urgency, "
    "status, updated_at, last_error"
)


class Message(msgspec.Struct, kw_only=True):
    id: str
    created: dt.datetime  # UTC
    name: str
    callback_number: str
    reason: str
    urgency: Urgency = "routine"
    status: str = "new"
    call_id: str = ""
    tool_call_id: str = ""
    updated: dt.datetime | None = None
    last_error: str = ""


def message_id(call_id: str, tool_call_id: str) -> str:
    """Stable for one tool call (its retries share the id); random without a tool-call id."""
    key = f"{call_id}\0{tool_call_id}" if tool_call_id else secrets.token_hex(16)
    return "M" + hashlib.sha256(key.encode()).hexdigest()[:11].upper()


class MessageStore:
    """The messages of one `hookline.Database` (or of the DuckDB file at a path).
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
        return self.db.describe()

    # -------------------------------------------------------------- async API

    async def add(self, message: Message) -> tuple[Message, bool]:
        """Store `message` (committed when this returns). Returns the stored message and
        whether it was new; a message with an existing id returns the stored one."""
        return await self.db.run(_add, self._stamped(message))

    async def pending(self, limit: int = 100) -> list[Message]:
        """Messages not yet handed on (status `new`), oldest first."""
        return await self.db.run(_select, _PENDING, [limit])

    async def mark(self, message_id: str, status: str, error: str = "") -> bool:
        """Set a message's status (one of STATUSES); False when there is no such id."""
        _check_status(status)
        return await self.db.run(_mark, message_id, status, error, self.clock())

    async def recent(self, limit: int = 50, status: str | None = None) -> list[Message]:
        if self._absent():
            return []
        return await self.db.run(_select, *_recent(limit, status))

    # -------------------------------------------------------------- blocking API

    def add_sync(self, message: Message) -> tuple[Message, bool]:
        return self.db.run_sync(_add, self._stamped(message))

    def pending_sync(self, limit: int = 100) -> list[Message]:
        return self.db.run_sync(_select, _PENDING, [limit])

    def mark_sync(self, message_id: str, status: str, error: str = "") -> bool:
        _check_status(status)
        return self.db.run_sync(_mark, message_id, status, error, self.clock())

    def recent_sync(self, limit: int = 50, status: str | None = None) -> list[Message]:
        if self._absent():
            return []
        return self.db.run_sync(_select, *_recent(limit, status))

    def _stamped(self, message: Message) -> Message:
        stamp = self.clock()
        return msgspec.structs.replace(message, created=stamp, updated=stamp)

    def _absent(self) -> bool:
        return self.path is not None and not self.path.exists()


_PENDING = "status = 'new' ORDER BY created_at, id LIMIT $1"


def _recent(limit: int, status: str | None) -> tuple[str, list[Any]]:
    if status:
        return "status = $1 ORDER BY created_at DESC, id LIMIT $2", [status, limit]
    return "true ORDER BY created_at DESC, id LIMIT $1", [limit]


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"status {status!r}: use one of {', '.join(STATUSES)}")


def _add(session: Session, message: Message) -> tuple[Message, bool]:
    marks = ", ".join(f"${i}" for i in range(1, 12))
    inserted = session.execute(
        f"INSERT INTO messages ({_COLUMNS}) VALUES ({marks}) "
        "ON CONFLICT (id) DO NOTHING RETURNING id",
        _row(message),
    )
    if inserted:
        return message, True
    (existing,) = _select(session, "id = $1", [message.id])
    return existing, False


def _mark(session: Session, message_id: str, status: str, error: str, now: dt.datetime) -> bool:
    rows = session.execute(
        "UPDATE messages SET status = $1, last_error = $2, updated_at = $3 "
        "WHERE id = $4 RETURNING id",
        [status, error, now, message_id],
    )
    return bool(rows)


def _row(m: Message) -> list[Any]:
    return [
        m.id, m.created, m.call_id, m.tool_call_id, m.name, m.callback_number, m.reason,
        m.urgency, m.status, m.updated or m.created, m.last_error,
    ]  # fmt: skip


def _select(session: Session, where: str, params: list[Any]) -> list[Message]:
    rows = session.execute(f"SELECT {_COLUMNS} FROM messages WHERE {where}", params)
    return [
        Message(
            id=r[0],
            created=r[1].astimezone(dt.UTC),
            call_id=r[2],
            tool_call_id=r[3],
            name=r[4],
            callback_number=r[5],
            reason=r[6],
            urgency=r[7],
            status=r[8],
            updated=r[9].astimezone(dt.UTC),
            last_error=r[10],
        )
        for r in rows
    ]

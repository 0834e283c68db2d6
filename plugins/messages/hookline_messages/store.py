"""Taken messages in a DuckDB file: committed before the tool says "message taken".

Each message is written in one explicit transaction (BEGIN, INSERT, COMMIT); DuckDB's
commit reaches its write-ahead log on disk before it returns, so a process killed right
after the tool answered still has the row when the file is opened again.

The file is opened for each operation and closed after it, so no process holds DuckDB's
file lock between messages: `hookline messages` can read the file while the server runs,
and a crash leaves nothing open. Writers in one process are serialized by a lock per file.

Ids are derived from (call id, tool-call id): the model retrying the same tool call maps
to the same id, and the second insert finds the first row instead of adding another.

Delivery (issue 13's outbox) reads `pending()` and records the outcome with `mark()`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import duckdb
import msgspec
import trio

from hookline import DuckDBFile

__all__ = ["STATUSES", "Message", "MessageStore", "message_id"]

PROVIDER = "tools/messages"
# `new`: taken, not yet handed on; `sent`: delivered to the shop's notification path;
# `failed`: delivery gave up (see `last_error`); `handled`: someone called back.
STATUSES = ("new", "sent", "failed", "handled")
Urgency = Literal["routine", "urgent"]

_SCHEMA = """
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
    """The messages of one DuckDB file. Async methods run in a worker thread behind
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
        self._writing = self._file.open
        self._run = self._file.run

    # -------------------------------------------------------------- async API

    async def add(self, message: Message) -> tuple[Message, bool]:
        """Store `message` (committed when this returns). Returns the stored message and
        whether it was new; a message with an existing id returns the stored one."""
        return await self._run(self.add_sync, message)

    async def pending(self, limit: int = 100) -> list[Message]:
        """Messages not yet handed on (status `new`), oldest first."""
        return await self._run(self.pending_sync, limit)

    async def mark(self, message_id: str, status: str, error: str = "") -> bool:
        """Set a message's status (one of STATUSES); False when there is no such id."""
        return await self._run(self.mark_sync, message_id, status, error)

    async def recent(self, limit: int = 50, status: str | None = None) -> list[Message]:
        return await self._run(self.recent_sync, limit, status)

    # -------------------------------------------------------------- blocking API

    def add_sync(self, message: Message) -> tuple[Message, bool]:
        stamp = self.clock()
        stored = msgspec.structs.replace(message, created=stamp, updated=stamp)
        with self._writing() as con:
            con.begin()
            try:
                inserted = con.execute(
                    f"INSERT INTO messages ({_COLUMNS}) VALUES ({', '.join('?' * 11)}) "
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
            (existing,) = _select(con, "id = ?", [message.id])
            return existing, False

    def pending_sync(self, limit: int = 100) -> list[Message]:
        with self._writing() as con:
            return _select(con, "status = 'new' ORDER BY created_at, id LIMIT ?", [limit])

    def mark_sync(self, message_id: str, status: str, error: str = "") -> bool:
        if status not in STATUSES:
            raise ValueError(f"status {status!r}: use one of {', '.join(STATUSES)}")
        with self._writing() as con:
            rows = con.execute(
                "UPDATE messages SET status = ?, last_error = ?, updated_at = ? "
                "WHERE id = ? RETURNING id",
                [status, error, self.clock(), message_id],
            ).fetchall()
            return bool(rows)

    def recent_sync(self, limit: int = 50, status: str | None = None) -> list[Message]:
        if not self.path.exists():
            return []
        with self._writing() as con:
            if status:
                return _select(
                    con, "status = ? ORDER BY created_at DESC, id LIMIT ?", [status, limit]
                )
            return _select(con, "true ORDER BY created_at DESC, id LIMIT ?", [limit])


def _row(m: Message) -> list[Any]:
    return [
        m.id, m.created, m.call_id, m.tool_call_id, m.name, m.callback_number, m.reason,
        m.urgency, m.status, m.updated or m.created, m.last_error,
    ]  # fmt: skip


def _select(con: duckdb.DuckDBPyConnection, where: str, params: list[Any]) -> list[Message]:
    rows = con.execute(f"SELECT {_COLUMNS} FROM messages WHERE {where}", params).fetchall()
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

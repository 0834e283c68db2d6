"""What is waiting for a person: messages, tow requests, failed notifications; live calls.

Messages are read and marked through the messages plugin's `MessageStore` (it opens its
file per operation, so this works beside the running tool); tow requests are the example
plugin's JSONL queue, with the ones marked done kept in `<queue>.done` next to it (the
queue file stays the plugin's alone). Both only when the config enables those tools.

Every blocking read or write here runs in a worker thread behind the dashboard limiter.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import trio

from ..config import Config

__all__ = ["WorkQueue", "live_calls", "outbox_failures", "retry_notification"]

log = logging.getLogger("hookline.dashboard")


def live_calls(runtime: Any, shown: Any) -> list[dict[str, Any]]:
    """The running calls (trio thread: reads attributes only). `shown(number)` applies
    the privacy setting to a number."""
    if runtime is None:
        return []
    now = time.time()
    calls = []
    for session in list(runtime.sessions):
        started = getattr(session, "started", 0.0) or now
        calls.append(
            {
                "id": session.info.call_id,
                "caller": shown(session.info.from_number),
                "seconds": max(0, int(now - started)),
                "state": getattr(session, "state", "listening"),
            }
        )
    calls.sort(key=lambda c: -c["seconds"])
    return calls


def _outbox_store(runtime: Any) -> Any:
    """The outbox's store inside `hookline serve` (None standalone or without channels)."""
    return getattr(getattr(runtime, "outbox", None), "store", None)


async def outbox_failures(runtime: Any, limit: int = 50) -> list[dict[str, Any]]:
    """Notifications that failed for good, newest first (read off the trio thread)."""
    store = _outbox_store(runtime)
    if store is None:
        return []
    failed = await store.run(store.recent_sync, limit, "failed")
    return [
        {
            "id": n.id,
            "kind": n.kind or n.key,
            "channel": n.channel,
            "to": n.to,
            "attempts": n.attempts,
            "error": n.last_error,
            "updated": n.updated,
        }
        for n in failed
    ]


async def retry_notification(runtime: Any, notification_id: str) -> bool:
    """Queue a failed notification again (the sender picks it up); False if unknown."""
    outbox = getattr(runtime, "outbox", None)
    return outbox is not None and await outbox.requeue(notification_id) is not None


class WorkQueue:
    def __init__(self, config: Config, limiter: trio.CapacityLimiter) -> None:
        self.limiter = limiter
        self.zone = ZoneInfo(config.agent.timezone)  # times shown in the shop's time zone
        tools = set(config.providers.tools)
        self._messages = None
        if "messages" in tools:
            # Looked up by name, not imported: the core does not depend on the plugin,
            # and with the tool configured the plugin is installed (or config fails).
            try:
                store = importlib.import_module("hookline_messages").MessageStore
            except ImportError:
                log.warning("dashboard: the messages tool is configured but not installed")
            else:
                path = config.tools.get("messages", {}).get("database", "data/messages.duckdb")
                self._messages = store(config.resolve_path(path), limiter)
        self._tow: Path | None = None
        if "tow_requests" in tools:
            queue = config.tools.get("tow_requests", {}).get(
                "queue_file", "data/tow_requests.jsonl"
            )
            self._tow = config.resolve_path(queue)

    @property
    def has_messages(self) -> bool:
        return self._messages is not None

    @property
    def has_tows(self) -> bool:
        return self._tow is not None

    async def messages(self) -> list[dict[str, Any]]:
        if self._messages is None:
            return []
        found = await trio.to_thread.run_sync(
            self._messages.recent_sync, 100, None, limiter=self.limiter
        )
        shown = [msgspec.structs.asdict(m) for m in found]
        for m in shown:
            m["created"] = m["created"].astimezone(self.zone)
        return shown

    async def mark_message(self, message_id: str, status: str) -> bool:
        if self._messages is None:
            return False
        return await trio.to_thread.run_sync(
            self._messages.mark_sync, message_id, status, "", limiter=self.limiter
        )

    async def tows(self) -> list[dict[str, Any]]:
        if self._tow is None:
            return []
        tows = await trio.to_thread.run_sync(_read_tows, self._tow, limiter=self.limiter)
        for t in tows:
            t["received_at"] = t["received_at"].astimezone(self.zone)
        return tows

    async def mark_tow_done(self, reference: str) -> bool:
        if self._tow is None:
            return False
        return await trio.to_thread.run_sync(_tow_done, self._tow, reference, limiter=self.limiter)


def _done_file(queue: Path) -> Path:
    return queue.with_name(queue.name + ".done")


def _read_tows(queue: Path) -> list[dict[str, Any]]:
    if not queue.exists():
        return []
    done_file = _done_file(queue)
    done = set(done_file.read_text().split()) if done_file.exists() else set()
    tows = []
    for line in queue.read_bytes().splitlines():
        if not line.strip():
            continue
        try:
            entry = msgspec.json.decode(line)
        except msgspec.DecodeError:
            continue  # a half-written last line: the next read has it whole
        if not isinstance(entry, dict) or "reference" not in entry:
            continue
        entry["done"] = entry["reference"] in done
        entry["received_at"] = dt.datetime.fromtimestamp(entry.get("received", 0), dt.UTC)
        tows.append(entry)
    tows.sort(key=lambda e: (e["done"], -e.get("received", 0)))
    return tows


def _tow_done(queue: Path, reference: str) -> bool:
    if not any(t["reference"] == reference for t in _read_tows(queue)):
        return False
    with _done_file(queue).open("a") as f:
        f.write(reference + "\n")
    return True

"""What is waiting for a person: messages, tow requests, failed notifications; live calls.

Messages and tow requests are read and marked through their plugins' stores, where the
config's `[storage]` keeps them (the server's own `Storage` inside `hookline serve`): a
DuckDB file opened per operation, so this works beside the running tool, or the shared
PostgreSQL database. Each only when the config enables that tool.

Every blocking read or write here runs in a worker thread (the stores' `Database.run`).
"""

from __future__ import annotations

import importlib
import logging
import time
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import trio

from ..config import Config
from ..database import Storage

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
    """`storage`: the running server's (`runtime.storage`); None builds one from the
    config (the dashboard on its own), its pool opened on first use."""

    def __init__(
        self, config: Config, limiter: trio.CapacityLimiter, storage: Storage | None = None
    ) -> None:
        self.limiter = limiter
        self.zone = ZoneInfo(config.agent.timezone)  # times shown in the shop's time zone
        tools = set(config.providers.tools)
        self._messages: Any = None
        self._tows: Any = None
        if not tools & {"messages", "tow_requests"}:
            return
        if storage is None:
            from ..runtime import build_storage

            storage = build_storage(config, limiter=limiter)
        # Looked up by name, not imported: the core does not depend on the plugins, and
        # with a tool configured its plugin is installed (or the config fails).
        if "messages" in tools:
            module = _plugin("hookline_messages", "messages")
            if module is not None:
                self._messages = module.store_for(config, storage)
        if "tow_requests" in tools:
            module = _plugin("hookline_example_tow", "tow_requests")
            if module is not None:
                self._tows = module.store_for(config, storage)

    @property
    def has_messages(self) -> bool:
        return self._messages is not None

    @property
    def has_tows(self) -> bool:
        return self._tows is not None

    async def messages(self) -> list[dict[str, Any]]:
        if self._messages is None:
            return []
        shown = [msgspec.structs.asdict(m) for m in await self._messages.recent(100)]
        for m in shown:
            m["created"] = m["created"].astimezone(self.zone)
        return shown

    async def mark_message(self, message_id: str, status: str) -> bool:
        if self._messages is None:
            return False
        return await self._messages.mark(message_id, status)

    async def tows(self) -> list[dict[str, Any]]:
        if self._tows is None:
            return []
        tows = [msgspec.structs.asdict(t) for t in await self._tows.recent(100)]
        for t in tows:
            t["received_at"] = t["received_at"].astimezone(self.zone)
        return tows

    async def mark_tow_done(self, reference: str) -> bool:
        if self._tows is None:
            return False
        return await self._tows.mark_done(reference)


def _plugin(module: str, tool: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        log.warning("dashboard: the %s tool is configured but not installed", tool)
        return None

"""Messages for the shop: `take_message` stores a caller's call-back request durably.

Enable with `[providers] tools = ["messages", ...]`; configure in `[tools.messages]`
(see `MessageSettings`). Delivery to the shop reads `MessageStore.pending()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from hookline import ToolSet, hookimpl
from hookline.tools import Tool

from .settings import MessageSettings
from .store import STATUSES, Message, MessageStore
from .tools import build_tools

if TYPE_CHECKING:
    from hookline.runtime import Runtime

__all__ = [
    "STATUSES",
    "Message",
    "MessageSettings",
    "MessageStore",
    "hookline_toolsets",
    "open_store",
]


def open_store(settings: MessageSettings, runtime: Runtime) -> MessageStore:
    """The store the runtime's config names (the only place the runtime is read)."""
    return MessageStore(runtime.config.resolve_path(settings.database), runtime.thread_limiter)


def _create(settings: MessageSettings, runtime: Runtime) -> Sequence[Tool]:
    return build_tools(open_store(settings, runtime))


@hookimpl
def hookline_toolsets() -> list[ToolSet]:
    return [
        ToolSet(
            name="messages",
            settings=MessageSettings,
            create=_create,
            description="Take a message for a call back (stored in a DuckDB file).",
            tool_names=("take_message",),
        )
    ]

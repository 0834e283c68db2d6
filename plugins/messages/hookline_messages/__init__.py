"""Messages for the shop: `take_message` stores a caller's call-back request durably.

Enable with `[providers] tools = ["messages", ...]`; configure in `[tools.messages]`
(see `MessageSettings`). Delivery to the shop reads `MessageStore.pending()`.
"""

from __future__ import annotations

from collections.abc import Sequence

from hookline import ProviderContext, Tool, ToolSet, hookimpl

from .settings import MessageSettings
from .store import STATUSES, Message, MessageStore
from .tools import build_tools

__all__ = [
    "STATUSES",
    "Message",
    "MessageSettings",
    "MessageStore",
    "hookline_toolsets",
    "open_store",
]


def open_store(settings: MessageSettings, ctx: ProviderContext) -> MessageStore:
    """The store the config names (a path relative to the config file)."""
    return MessageStore(ctx.resolve_path(settings.database), ctx.thread_limiter)


def _create(settings: MessageSettings, ctx: ProviderContext) -> Sequence[Tool]:
    return build_tools(open_store(settings, ctx))


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

"""Messages for the shop: `take_message` stores a caller's call-back request durably.

Enable with `[providers] tools = ["messages", ...]`; configure in `[tools.messages]`
(see `MessageSettings`). Delivery to the shop reads `MessageStore.pending()`.
"""

from __future__ import annotations

from collections.abc import Sequence

from hookline import (
    Config,
    ProviderContext,
    ProviderError,
    Storage,
    Tool,
    ToolContext,
    ToolSet,
    decode_section,
    hookimpl,
)

from .settings import MessageSettings
from .store import PROVIDER, SCHEMA, STATUSES, Message, MessageStore
from .tools import Notify, build_tools

__all__ = [
    "STATUSES",
    "Message",
    "MessageSettings",
    "MessageStore",
    "hookline_toolsets",
    "open_store",
    "shop_notifier",
    "store_for",
]


def open_store(settings: MessageSettings, ctx: ProviderContext) -> MessageStore:
    """The store `[storage]` chooses: the DuckDB file `database` (relative to the config
    file), or the table `messages` in the shared PostgreSQL database."""
    return MessageStore(ctx.database(settings.database, SCHEMA, provider=PROVIDER))


def store_for(config: Config, storage: Storage) -> MessageStore:
    """The same store outside a running server (`hookline messages`, the dashboard):
    `storage` is the config's `[storage]` (`hookline.build_storage(config)`)."""
    settings = decode_section(
        config, "tools.messages", config.tools.get("messages"), MessageSettings
    )
    file = config.resolve_path(settings.database)
    return MessageStore(storage.database(file=file, schema=SCHEMA, provider=PROVIDER))


def shop_notifier(settings: MessageSettings, ctx: ProviderContext) -> Notify:
    """Enqueues a taken message for the shop: a text to `notify_sms`, the signed webhook.
    Keyed by message id, so the model retrying `take_message` notifies once."""
    outbox, shop = ctx.outbox, ctx.agent.name

    async def notify(message: Message, tool_ctx: ToolContext) -> None:
        fields = {
            "shop": shop,
            "name": message.name,
            "callback": message.callback_number,
            "urgency": message.urgency,
            "reason": message.reason,
            "id": message.id,
        }
        text = settings.sms_template.format_map(fields)
        targets = [("sms", settings.notify_sms)] if settings.notify_sms else []
        if settings.notify_webhook:
            targets.append(("webhook", ""))
        for channel, to in targets:
            try:
                await outbox.enqueue(
                    key=f"message:{message.id}:{channel}",
                    channel=channel,
                    to=to or "",
                    body=text,
                    kind="message.taken",
                    payload={**fields, "created": message.created.isoformat()},
                    call_id=tool_ctx.call.call_id,
                )
            except ProviderError as e:  # the message itself is stored: that stands
                tool_ctx.logger.warning("message %s: %s not queued: %s", message.id, channel, e)

    return notify


def _create(settings: MessageSettings, ctx: ProviderContext) -> Sequence[Tool]:
    return build_tools(open_store(settings, ctx), shop_notifier(settings, ctx))


@hookimpl
def hookline_toolsets() -> list[ToolSet]:
    return [
        ToolSet(
            name="messages",
            settings=MessageSettings,
            create=_create,
            description="Take a message for a call back (kept where [storage] says).",
            tool_names=("take_message",),
        )
    ]

"""A notification channel: what a plugin offers through `hookline_notification_channels`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import msgspec

from .store import Notification

if TYPE_CHECKING:
    from ..context import ProviderContext

__all__ = ["Channel", "ChannelSpec"]


@runtime_checkable
class Channel(Protocol):
    """Delivers one notification. Return when the far end accepted it; raise a
    `hookline.ProviderError` when it did not: `retryable` (a 429, a 5xx, no connection)
    has the outbox try again later with backoff, honouring `retry_after`; anything else
    fails the notification for good, with the error shown in `hookline outbox`.

    The same notification may be delivered more than once (a process killed after the
    far end accepted it but before the outcome was written): pass `notification.id` on,
    so a receiver can drop a repeat."""

    async def send(self, notification: Notification) -> None: ...


@dataclass(frozen=True)
class ChannelSpec:
    """A channel kind: `name` is the config section (`[notifications.<name>]`) and what
    tools enqueue to; `settings` the Struct that section decodes into;
    `create(settings, ctx)` builds the channel once per process (ctx: ProviderContext,
    section "notifications.<name>")."""

    name: str
    settings: type[msgspec.Struct]
    create: Callable[[Any, ProviderContext], Channel]
    description: str = ""

"""The outbox: every outbound notification is committed to a DuckDB file first, then
delivered by a background sender with bounded, persisted retries.

Tools reach it as `ctx.outbox` (`ProviderContext.outbox`) in their tool set's factory:

    await outbox.enqueue(key=f"booking:{id}:confirmation", channel="sms",
                         to=number, body=text, payload={...}, kind="booking.confirmed")

Channels are plugins (`hookline_notification_channels`); the core ships the signed
webhook (`hookline.outbox.webhook`), the Twilio plugin ships SMS. See
docs/notifications.md.
"""

from __future__ import annotations

from .channel import Channel, ChannelSpec
from .sender import Outbox
from .store import STATUSES, Notification, OutboxStore, Status, notification_id

__all__ = [
    "STATUSES",
    "Channel",
    "ChannelSpec",
    "Notification",
    "Outbox",
    "OutboxStore",
    "Status",
    "notification_id",
]

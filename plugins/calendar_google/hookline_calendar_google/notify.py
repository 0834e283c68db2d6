"""Confirmation texts to the caller: booked, moved, cancelled.

After the store confirmed the change, the tool enqueues one SMS through the outbox
(`ctx.outbox` of the tool set's factory) and returns: delivery happens later, from the
outbox's sender, so the caller never waits on it and a failing text never fails the
booking. The idempotency key names the booking and the event ("booking:<id>:confirmed"):
a retried tool call, or the same booking found again, enqueues nothing new.

The texts are `[tools.calendar_google]` templates (`sms_booked`, `sms_rescheduled`,
`sms_cancelled`) with these fields: {shop}, {shop_phone}, {name}, {service}, {when},
{vehicle}, {appointment_id}, {code}. A caller who said no (`sms_ok = false` on the
booking) gets none, and a number that replied STOP is skipped by the outbox.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from zoneinfo import ZoneInfo

from hookline import Outbox, ProviderError, ToolContext

from .schedule import Booking

__all__ = ["FIELDS", "Confirmations", "render", "sms_when"]

FIELDS = ("shop", "shop_phone", "name", "service", "when", "vehicle", "appointment_id", "code")
SAMPLE = dict.fromkeys(FIELDS, "x")

log = logging.getLogger("hookline.tools.calendar_google")


def render(template: str, values: Mapping[str, str]) -> str:
    """`template` with `{field}`s filled; raises KeyError/ValueError for a bad template."""
    return template.format_map(dict(values))


def sms_when(start: dt.datetime, tz: ZoneInfo) -> str:
    """'Tue Dec 1 at 9:30 AM': a date a text can carry (no 'tomorrow': it is read later)."""
    local = start.astimezone(tz)
    hour = local.strftime("%I").lstrip("0")
    return f"{local:%a %b} {local.day} at {hour}:{local:%M %p}"


class Confirmations:
    """Enqueues the confirmation texts of one tool set."""

    def __init__(
        self,
        outbox: Outbox,
        *,
        channel: str,
        templates: Mapping[str, str],
        shop: str,
        shop_phone: str,
        tz: ZoneInfo,
    ) -> None:
        self.outbox = outbox
        self.channel = channel
        self.templates = dict(templates)  # event ("booked", ...) -> template
        self.shop, self.shop_phone, self.tz = shop, shop_phone, tz

    async def send(self, ctx: ToolContext, event: str, booking: Booking) -> str | None:
        """Enqueue the `event` text for `booking` to its phone; the notification id, or
        None when nothing was enqueued (no template, no channel, opted out, or the outbox
        could not be written: logged, the booking stands)."""
        template = self.templates.get(event, "")
        if not template or not booking.phone:
            return None
        values = {
            "shop": self.shop,
            "shop_phone": self.shop_phone,
            "name": booking.customer_name or "there",
            "service": booking.service,
            "when": sms_when(booking.start, self.tz),
            "vehicle": booking.vehicle,
            "appointment_id": booking.id,
            "code": booking.confirmation_code,
        }
        try:
            return await self.outbox.enqueue(
                key=f"booking:{booking.id}:{event}",
                channel=self.channel,
                to=booking.phone,
                body=render(template, values),
                kind=f"booking.{event}",
                payload={**values, "start": booking.start.isoformat(), "phone": booking.phone},
                call_id=ctx.call.call_id,
            )
        except ProviderError as e:
            ctx.logger.warning("the %s text for %s was not queued: %s", event, booking.id, e)
            return None

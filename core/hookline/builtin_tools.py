"""Built-in tools every agent can use: end the call, hand the caller to a person.

Enabled by listing "builtin" in `[providers] tools`. `transfer_call` is offered only when
`[agent] transfer_number` is set.

When a person can take the call is its own fact: the hours the service desk is staffed
(often not the shop's opening hours, and not a calendar's bookable slots). It lives in
`[tools.builtin]`, and the tool itself refuses outside it with a sentence the model can
say, so a transfer at 3 AM never rings an empty desk whatever the model decided:

    [tools.builtin]
    transfer_hours = { mon = "08:00-17:00", tue = "08:00-17:00", sat = ["09:00-12:00"] }
    transfer_closed = [2026-12-24, 2026-12-25]

Times are wall-clock in `[agent] timezone`. Without `transfer_hours` the tool transfers
at any time (the prompt's own guard, the calendar's `open_now`, still applies).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import msgspec

from .context import ProviderContext
from .hookspecs import hookimpl
from .tools import Tool, ToolContext, ToolSet, tool

__all__ = ["BuiltinSettings", "TransferHours"]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class BuiltinSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # Weekday ("mon".."sun") -> "HH:MM-HH:MM" or a list of them: when a person answers.
    # Unset: transfers at any time. A weekday left out: no transfers that day.
    transfer_hours: dict[str, str | list[str]] | None = None
    # Dates no one answers (holidays), in the shop's time zone.
    transfer_closed: list[dt.date] = []

    def __post_init__(self) -> None:
        for day, spans in (self.transfer_hours or {}).items():
            if day not in WEEKDAYS:
                raise ValueError(
                    f"transfer_hours: unknown weekday {day!r} (use {', '.join(WEEKDAYS)})"
                )
            _parse_spans(spans)


def _parse_spans(value: str | list[str]) -> list[tuple[dt.time, dt.time]]:
    spans = []
    for span in [value] if isinstance(value, str) else value:
        start, sep, end = span.partition("-")
        try:
            opens, closes = dt.time.fromisoformat(start.strip()), dt.time.fromisoformat(end.strip())
        except ValueError:
            opens = closes = None
        if not sep or opens is None or closes is None or closes <= opens:
            raise ValueError(f"transfer_hours: {span!r} should look like '08:00-17:00'")
        spans.append((opens, closes))
    return spans


class TransferHours:
    """Whether a person can take a transfer at a given moment."""

    def __init__(self, settings: BuiltinSettings, timezone: str) -> None:
        self.tz = ZoneInfo(timezone)
        self.closed = frozenset(settings.transfer_closed)
        self.hours = {
            WEEKDAYS.index(day): _parse_spans(spans)
            for day, spans in (settings.transfer_hours or {}).items()
        }

    def staffed(self, now: dt.datetime) -> bool:
        local = now.astimezone(self.tz)
        if local.date() in self.closed:
            return False
        t = local.time().replace(tzinfo=None)
        return any(opens <= t < closes for opens, closes in self.hours.get(local.weekday(), ()))


class EndCall(msgspec.Struct, forbid_unknown_fields=True):
    goodbye: Annotated[
        str | None,
        msgspec.Meta(description="A short goodbye to say before hanging up; omit for the default"),
    ] = None


class TransferCall(msgspec.Struct, forbid_unknown_fields=True):
    reason: Annotated[
        str, msgspec.Meta(description="Why the caller wants a person, in a few words")
    ]


@tool(side_effect=True, timeout=60, filler=False)
async def end_call(params: EndCall, ctx: ToolContext) -> dict[str, Any]:
    """End the phone call: says goodbye, waits until the caller heard it, then hangs up.
    Use it when the caller is done or asks to hang up."""
    await ctx.control.end_call(params.goodbye)
    return {"ok": True}


CLOSED_ANSWER = (
    "Nobody is at the service desk right now, so the call cannot be transferred. "
    "Tell the caller, and offer to take a message so someone calls them back."
)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _transfer_tool(
    number: str,
    announcement: str,
    hours: TransferHours | None,
    clock: Callable[[], dt.datetime] = _utc_now,
) -> Tool:
    # A Dial that is not answered brings the caller back to the agent (the telephony
    # provider's part); the timeout, signed callback and outcome are its business.
    @tool(side_effect=True, timeout=60, filler=False)
    async def transfer_call(params: TransferCall, ctx: ToolContext) -> dict[str, Any]:
        """Hand the caller to a person at the shop. Use it when the caller asks for a human,
        or for anything you cannot handle."""
        if hours is not None and not hours.staffed(clock()):
            ctx.logger.info("transfer refused: outside the transfer hours (%s)", params.reason)
            return {"ok": False, "transferred": False, "error": CLOSED_ANSWER}
        ctx.logger.info("transfer requested: %s", params.reason)
        await ctx.control.transfer(number, announcement)
        return {"ok": True, "transferred": True}

    return transfer_call


def _create(settings: BuiltinSettings | None, ctx: ProviderContext) -> Sequence[Tool]:
    agent = ctx.agent
    tools = [end_call]
    if agent.transfer_number:
        hours = None
        if settings is not None and settings.transfer_hours is not None:
            hours = TransferHours(settings, agent.timezone)
        tools.append(_transfer_tool(agent.transfer_number, agent.transfer_announcement, hours))
    return tools


@hookimpl
def hookline_toolsets() -> list[ToolSet]:
    return [
        ToolSet(
            name="builtin",
            create=_create,
            settings=BuiltinSettings,
            description="end_call, transfer_call (with [agent] transfer_number)",
            tool_names=("end_call", "transfer_call"),
        )
    ]

"""Tow requests for a service shop: a third-party hookline tool plugin.

Registered in its pyproject:

    [project.entry-points.hookline]
    tow_requests = "hookline_example_tow"
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Annotated, Any

import msgspec

from hookline import (
    PhoneNumber,
    PositiveInt,
    ProviderContext,
    ProviderError,
    Tool,
    ToolContext,
    ToolError,
    ToolSet,
    hookimpl,
    tool,
)

from .store import PROVIDER, SCHEMA, Towed, TowStore, store_for

__all__ = ["TowRequest", "TowSettings", "TowStore", "Towed", "hookline_toolsets", "store_for"]


class TowSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # The DuckDB file (relative to the config file) with `[storage] backend = "duckdb"`;
    # with "postgresql" the requests are in the shared database and this is unused.
    database: str = "data/tow_requests.duckdb"
    # The JSON-lines queue of earlier versions: refused with a pointer to `database`.
    queue_file: str | None = None
    # What the caller is told and the dispatcher is sent: the shop's current estimate.
    eta_minutes: PositiveInt = 45
    # The dispatcher hears of each request at once, through hookline's outbox: a text to
    # `dispatcher_number` (none when unset) and the signed webhook (when configured).
    dispatcher_number: PhoneNumber | None = None
    notify_webhook: bool = True

    def __post_init__(self) -> None:
        if self.queue_file is not None:
            raise ValueError(
                "queue_file: tow requests are now kept in `database` (a DuckDB file, or "
                "PostgreSQL with [storage] backend); remove queue_file"
            )


class TowRequest(msgspec.Struct, forbid_unknown_fields=True):
    location: Annotated[str, msgspec.Meta(description="Where the vehicle is: address or landmark")]
    vehicle: Annotated[str, msgspec.Meta(description="Year, make, model and color")]
    problem: Annotated[str, msgspec.Meta(description="What happened, in a few words")]
    callback_number: Annotated[
        str | None, msgspec.Meta(description="A number to reach the caller; omit for theirs")
    ] = None


def _tools(settings: TowSettings, context: ProviderContext) -> list[Tool]:
    store = TowStore(context.database(settings.database, SCHEMA, provider=PROVIDER))

    @tool(side_effect=True)
    async def request_tow(params: TowRequest, ctx: ToolContext) -> dict[str, Any]:
        """Send a tow truck: records the request for the dispatcher and returns a reference
        number and the expected arrival time to tell the caller."""
        if not params.location.strip():
            raise ToolError("I need to know where the vehicle is")
        # The same tool call id (a retry) maps to the same request: no duplicate trucks.
        digest = hashlib.sha1(f"{ctx.call.call_id}:{ctx.tool_call_id}".encode()).hexdigest()
        wanted = Towed(
            id=digest,
            reference=f"T{int(digest[:8], 16) % 100000:05d}",
            call_id=ctx.call.call_id,
            received_at=dt.datetime.now(dt.UTC),
            location=params.location,
            vehicle=params.vehicle,
            problem=params.problem,
            callback_number=params.callback_number or ctx.call.from_number,
            eta_minutes=settings.eta_minutes,
        )
        try:
            entry, new = await store.add(wanted)  # committed before the caller hears it
        except ProviderError as e:
            ctx.logger.warning("tow request not stored: %s", e)
            raise ToolError(
                "I couldn't record the tow request just now. Please call the shop's main "
                "line, or try again in a minute."
            ) from e
        ctx.logger.info("tow request %s %s", entry.reference, "queued" if new else "found")
        await _notify_dispatcher(settings, context, entry, ctx)
        return {
            "reference": entry.reference,
            "eta_minutes": entry.eta_minutes,
            "callback_number": entry.callback_number,
        }

    return [request_tow]


async def _notify_dispatcher(
    settings: TowSettings, context: ProviderContext, entry: Towed, ctx: ToolContext
) -> None:
    """Enqueue the request for the dispatcher (text and/or webhook); keyed by reference,
    so a retried tool call notifies once. A delivery problem never fails the request."""
    text = (
        f"Tow {entry.reference}: {entry.vehicle} at {entry.location} ({entry.problem}). "
        f"Caller {entry.callback_number}, told ETA {entry.eta_minutes} min."
    )
    payload = {
        "reference": entry.reference,
        "call_id": entry.call_id,
        "received": entry.received_at.timestamp(),
        "location": entry.location,
        "vehicle": entry.vehicle,
        "problem": entry.problem,
        "callback_number": entry.callback_number,
        "eta_minutes": entry.eta_minutes,
    }
    targets = [("sms", settings.dispatcher_number)] if settings.dispatcher_number else []
    if settings.notify_webhook:
        targets.append(("webhook", ""))
    for channel, to in targets:
        try:
            await context.outbox.enqueue(
                key=f"tow:{entry.reference}:{entry.call_id}:{channel}",
                channel=channel,
                to=to or "",
                body=text,
                kind="tow.requested",
                payload=payload,
                call_id=entry.call_id,
            )
        except ProviderError as e:
            ctx.logger.warning("tow request %s: %s not queued: %s", entry.reference, channel, e)


@hookimpl
def hookline_toolsets() -> list[ToolSet]:
    return [
        ToolSet(
            name="tow_requests",
            settings=TowSettings,
            create=_tools,
            description="request_tow",
            tool_names=("request_tow",),
        )
    ]

"""Tow requests for a service shop: a third-party hookline tool plugin.

Registered in its pyproject:

    [project.entry-points.hookline]
    tow_requests = "hookline_example_tow"
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Annotated, Any

import msgspec
import trio

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

__all__ = ["TowRequest", "TowSettings", "hookline_toolsets"]


class TowSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    queue_file: str = "data/tow_requests.jsonl"  # relative to the config file
    # What the caller is told and the dispatcher is sent: the shop's current estimate.
    eta_minutes: PositiveInt = 45
    # The dispatcher hears of each request at once, through hookline's outbox: a text to
    # `dispatcher_number` (none when unset) and the signed webhook (when configured).
    dispatcher_number: PhoneNumber | None = None
    notify_webhook: bool = True


class TowRequest(msgspec.Struct, forbid_unknown_fields=True):
    location: Annotated[str, msgspec.Meta(description="Where the vehicle is: address or landmark")]
    vehicle: Annotated[str, msgspec.Meta(description="Year, make, model and color")]
    problem: Annotated[str, msgspec.Meta(description="What happened, in a few words")]
    callback_number: Annotated[
        str | None, msgspec.Meta(description="A number to reach the caller; omit for theirs")
    ] = None


class _Queued(msgspec.Struct):
    reference: str
    call_id: str
    received: float
    location: str
    vehicle: str
    problem: str
    callback_number: str


def _tools(settings: TowSettings, context: ProviderContext) -> list[Tool]:
    queue = context.resolve_path(settings.queue_file)
    lock = trio.Lock()  # one writer per process: lines never interleave

    @tool(side_effect=True)
    async def request_tow(params: TowRequest, ctx: ToolContext) -> dict[str, Any]:
        """Send a tow truck: records the request for the dispatcher and returns a reference
        number and the expected arrival time to tell the caller."""
        if not params.location.strip():
            raise ToolError("I need to know where the vehicle is")
        # The same tool call id (a retry) maps to the same reference: no duplicate trucks.
        digest = hashlib.sha1(f"{ctx.call.call_id}:{ctx.tool_call_id}".encode()).hexdigest()
        entry = _Queued(
            reference=f"T{int(digest[:8], 16) % 100000:05d}",
            call_id=ctx.call.call_id,
            received=time.time(),
            location=params.location,
            vehicle=params.vehicle,
            problem=params.problem,
            callback_number=params.callback_number or ctx.call.from_number,
        )
        async with lock:
            await trio.to_thread.run_sync(_append, queue, entry, limiter=context.thread_limiter)
        ctx.logger.info("tow request %s queued", entry.reference)
        await _notify_dispatcher(settings, context, entry, ctx)
        return {
            "reference": entry.reference,
            "eta_minutes": settings.eta_minutes,
            "callback_number": entry.callback_number,
        }

    return [request_tow]


async def _notify_dispatcher(
    settings: TowSettings, context: ProviderContext, entry: _Queued, ctx: ToolContext
) -> None:
    """Enqueue the request for the dispatcher (text and/or webhook); keyed by reference,
    so a retried tool call notifies once. A delivery problem never fails the request."""
    text = (
        f"Tow {entry.reference}: {entry.vehicle} at {entry.location} ({entry.problem}). "
        f"Caller {entry.callback_number}, told ETA {settings.eta_minutes} min."
    )
    payload = {**msgspec.structs.asdict(entry), "eta_minutes": settings.eta_minutes}
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


def _append(path: Path, entry: _Queued) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = path.read_bytes().splitlines() if path.exists() else []
    line = msgspec.json.encode(entry)
    if any(msgspec.json.decode(old)["reference"] == entry.reference for old in existing if old):
        return
    with path.open("ab") as f:
        f.write(line + b"\n")


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

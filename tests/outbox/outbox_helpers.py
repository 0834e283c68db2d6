"""A shop runtime with the calendar's local backend and the outbox's SMS channel aimed at
Twilio's REST fake, and tool calls made the way the engine makes them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import msgspec
import trio

from hookline.config import Secrets
from hookline.outbox import Notification
from hookline.providers import CallInfo
from hookline.runtime import Runtime
from hookline.testing.harness import make_config, scripted_plugins
from hookline.tools import ToolContext
from hookline_testkit.twilio_sim import TwilioRestFake

CALLER = "+13125550101"
SHOP_PHONE = "+13125550140"
SHOP_NUMBER = "+13125550199"  # the Twilio number texts come from
DISPATCHER = "+13125550177"
WEEK = {d: "07:00-19:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


class NoCall:
    async def end_call(self, goodbye: str | None) -> None: ...
    async def transfer(self, number: str, announcement: str | None) -> None: ...


def shop_runtime(
    tmp_path: Path, rest: TwilioRestFake, secrets: dict[str, str], **sections: dict[str, Any]
) -> Runtime:
    raw: dict[str, Any] = {
        "agent": {"phone": SHOP_PHONE, "timezone": "America/Chicago"},
        "providers": {"tools": ["calendar_google", "messages", "tow_requests"]},
        "tools": {
            "calendar_google": {
                "backend": "local",
                "database": str(tmp_path / "calendar.duckdb"),
                "hours": WEEK,
                "services": {"oil change": 30},
                "min_lead_minutes": 0,
            },
            "messages": {
                "database": str(tmp_path / "messages.duckdb"),
                "notify_sms": DISPATCHER,
            },
            "tow_requests": {
                "database": str(tmp_path / "tow.duckdb"),
                "dispatcher_number": DISPATCHER,
                "eta_minutes": 35,
            },
        },
        "notifications": {"sms": {"from_number": SHOP_NUMBER, "api_base_url": rest.url}},
        "outbox": {
            "database": str(tmp_path / "outbox.duckdb"),
            "first_retry_s": 0.05,
            "max_retry_s": 0.2,
            "poll_s": 0.2,
        },
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    config = make_config(**raw)
    return Runtime(config, scripted_plugins(installed=True), secrets=Secrets(secrets))


def tool_ctx(call_id: str = "call-1", tool_call_id: str = "tc-1") -> ToolContext:
    return ToolContext(
        call=CallInfo(call_id=call_id, provider_call_id="CA" + call_id, from_number=CALLER),
        control=NoCall(),
        logger=logging.LoggerAdapter(logging.getLogger("test.outbox"), {"call_id": call_id}),
        tool_call_id=tool_call_id,
    )


async def call_tool(
    runtime: Runtime, tool_name: str, ctx: ToolContext | None = None, /, **args: Any
) -> Any:
    t = runtime.tools[tool_name]
    params = t.decode(msgspec.json.encode(args).decode())
    return await t.handler(params, ctx or tool_ctx())


async def book(runtime: Runtime, ctx: ToolContext | None = None, **extra: Any) -> Any:
    """check_availability, then book the first slot offered; returns the booking result."""
    offered = await call_tool(runtime, "check_availability", service="oil change")
    start = offered.slots[0].start
    return await call_tool(
        runtime,
        "book_appointment",
        ctx,
        service="oil change",
        start=start,
        customer_name="Sam Rivera",
        vehicle="2018 Honda Civic",
        **extra,
    )


async def wait_settled(runtime: Runtime, within_s: float = 20.0) -> list[Notification]:
    """Every notification once none is pending (the sender must be running)."""
    store = runtime.outbox.store
    assert store is not None
    with trio.fail_after(within_s):
        while True:
            rows = store.recent_sync(100)
            if all(n.status != "pending" for n in rows):
                return rows
            await trio.sleep(0.05)

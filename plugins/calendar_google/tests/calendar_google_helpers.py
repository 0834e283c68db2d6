"""Shared test helpers: a shop on either backend, tool contexts, a settable clock."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import trio

from hookline import Database, Storage
from hookline.providers import CallInfo
from hookline.tools import Tool, ToolContext
from hookline_calendar_google import CalendarSettings, create_scheduler
from hookline_calendar_google.tools import Scheduler, build_tools
from hookline_testkit.fake_google_calendar import FakeGoogleCalendar

TZ = "America/Chicago"
# Friday 6 March 2026, 8:00 in Chicago (CST, UTC-6); DST starts Sunday 8 March.
NOW = dt.datetime(2026, 3, 6, 14, 0, tzinfo=dt.UTC)

SHOP: dict[str, Any] = {
    "timezone": TZ,
    "hours": {
        "mon": "07:30-18:00",
        "tue": "07:30-18:00",
        "wed": "07:30-18:00",
        "thu": "07:30-18:00",
        "fri": "07:30-18:00",
        "sat": "08:00-13:00",
    },
    "closures": ["2026-03-10"],
    "services": {
        "oil change": 30,
        "tire rotation": 30,
        "brakes": 120,
        "diagnostics": 60,
        "state inspection": 45,
        "alignment": 60,
    },
    "bays": 2,
    "min_lead_minutes": 60,
    "max_days_ahead": 30,
    "slot_minutes": 15,
    "max_slots": 5,
    "offer_spacing_minutes": 0,
    "rate_limit_backoff_s": 0.01,
    "backoff_max_s": 0.05,
    "request_timeout_s": 5.0,
}

ALICE = "+13125550101"
BOB = "+13125550102"


class RecordingCallControl:
    """A CallControl that remembers what tools asked of the call."""

    def __init__(self) -> None:
        self.ended: list[str | None] = []
        self.transfers: list[tuple[str, str | None]] = []

    async def end_call(self, goodbye: str | None) -> None:
        self.ended.append(goodbye)

    async def transfer(self, number: str, announcement: str | None) -> None:
        self.transfers.append((number, announcement))


def make_ctx(
    from_number: str = ALICE, call_id: str = "call-1", tool_call_id: str = "tc-1"
) -> ToolContext:
    return ToolContext(
        call=CallInfo(call_id=call_id, provider_call_id="CA" + call_id, from_number=from_number),
        control=RecordingCallControl(),
        logger=logging.LoggerAdapter(logging.getLogger("test.calendar"), {"call_id": call_id}),
        tool_call_id=tool_call_id,
    )


@dataclass
class Clock:
    now: dt.datetime = NOW

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class Shop:
    """One process's view of the shop: its own scheduler, store and connections."""

    backend: str
    scheduler: Scheduler
    tools: dict[str, Tool]
    clock: Clock
    fake: FakeGoogleCalendar | None = None

    async def call(self, name: str, ctx: ToolContext | None = None, **args: Any) -> Any:
        tool = self.tools[name]
        params = tool.decode(msgspec.json.encode(args).decode())
        return await tool.handler(params, ctx or make_ctx())

    @property
    def store(self) -> Any:
        return self.scheduler.store


@dataclass
class ShopFactory:
    """`postgres_url`: the local backend's table in that PostgreSQL database, each shop
    with its own connection pool (as separate processes have), instead of the file."""

    backend: str
    fake: FakeGoogleCalendar | None
    database: Path
    postgres_url: str = ""
    clock: Clock = field(default_factory=Clock)
    built: list[Shop] = field(default_factory=list)
    storages: list[Storage] = field(default_factory=list)

    def _database(self) -> Callable[[str, str], Database] | None:
        if not self.postgres_url:
            return None  # the DuckDB file `database`
        storage = Storage("postgresql", url=self.postgres_url, pool_size=4)
        self.storages.append(storage)
        return lambda file, schema: storage.database(
            file=Path(file), schema=schema, provider="tools/calendar_google"
        )

    def close(self) -> None:
        for storage in self.storages:
            storage.close()

    def settings(self, **overrides: Any) -> CalendarSettings:
        raw = {**SHOP, **overrides, "backend": self.backend}
        if self.fake is not None:
            raw.setdefault("api_endpoint", self.fake.api_endpoint)
            raw.setdefault("token_uri", self.fake.token_uri)
        raw["database"] = str(self.database)
        return msgspec.convert(raw, CalendarSettings)

    def __call__(self, env: dict[str, str] | None = None, **overrides: Any) -> Shop:
        fake = self.fake
        environ = env or (
            {
                "GOOGLE_CLIENT_ID": fake.client_id,
                "GOOGLE_CLIENT_SECRET": fake.client_secret,
                "GOOGLE_REFRESH_TOKEN": fake.refresh_token,
            }
            if fake
            else {}
        )
        scheduler = create_scheduler(
            self.settings(**overrides),
            default_timezone="UTC",
            limiter=trio.CapacityLimiter(16),
            secret=lambda env_var, key: environ[env_var],
            resolve_path=Path,
            clock=self.clock,
            database=self._database(),
        )
        shop = Shop(self.backend, scheduler, {t.name: t for t in build_tools(scheduler)},
                    self.clock, fake)  # fmt: skip
        self.built.append(shop)
        return shop


def local(text: str) -> dt.datetime:
    """'2026-03-09T09:00' in the shop's time zone, as UTC."""
    from zoneinfo import ZoneInfo

    return dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(TZ)).astimezone(dt.UTC)

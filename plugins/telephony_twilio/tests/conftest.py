"""Fixtures for the Twilio provider tests: the real routes on a real Hypercorn server,
driven by the Twilio simulator, with a small recording `CallHandler` in place of the
runtime (the provider only sees the `CallHandler` Protocol)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

from hookline.providers import CallInfo, CallLeg, LegEvent
from hookline.server import asgi_app, serve_asgi
from hookline_telephony_twilio import TwilioSettings, TwilioTelephony
from hookline_testkit.fixtures_twilio import (  # noqa: F401 (fixtures)
    twilio_auth_token,
    twilio_rest,
    twilio_secrets,
    twilio_sim,
)
from hookline_testkit.twilio_sim import DEFAULT_ACCOUNT_SID, TwilioRestFake

BUSY = "All lines are busy, call back later."


class RecordingHandler:
    """A CallHandler that admits up to `capacity` calls and records what each leg does.

    `on_call(leg)` runs beside the event reader for every call (play, mark, hang up...).
    """

    def __init__(self, capacity: int = 10) -> None:
        self.capacity = capacity
        self.active = 0
        self.admitted = 0
        self.rejected: list[tuple[CallInfo, str]] = []
        self.refused: Counter[str] = Counter()
        self.statuses: list[tuple[str, dict[str, str]]] = []
        self.legs: list[CallLeg] = []
        self.events: dict[str, list[LegEvent]] = {}
        self.ended: dict[str, trio.Event] = {}
        self.started = trio.Event()
        self.on_call: Callable[[CallLeg], Awaitable[None]] | None = None
        self.changed = trio.Event()

    def try_admit(self) -> bool:
        if self.active >= self.capacity:
            return False
        self.active += 1
        self.admitted += 1
        return True

    def release(self) -> None:
        assert self.active > 0, "released more slots than admitted"
        self.active -= 1
        self._poke()

    async def run_call(self, leg: CallLeg) -> None:
        call_id = leg.info.call_id
        self.legs.append(leg)
        self.events[call_id] = []
        self.ended[call_id] = trio.Event()
        self.started.set()
        try:
            async with trio.open_nursery() as nursery:
                if self.on_call is not None:
                    nursery.start_soon(self.on_call, leg)
                async for event in leg.events():
                    self.events[call_id].append(event)
                    self._poke()
                nursery.cancel_scope.cancel()
        finally:
            self.ended[call_id].set()
            self.release()

    def record_rejected(self, info: CallInfo, reason: str) -> None:
        self.rejected.append((info, reason))
        self._poke()

    def count_refused(self, reason: str) -> None:
        self.refused[reason] += 1
        self._poke()

    def record_status(self, provider_call_id: str, fields: Any) -> None:
        self.statuses.append((provider_call_id, dict(fields)))
        self._poke()

    def _poke(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self.changed.wait()


@dataclass
class Served:
    base: str  # http://127.0.0.1:PORT
    telephony: TwilioTelephony
    handler: RecordingHandler
    rest: TwilioRestFake
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def voice(self) -> str:
        return f"{self.base}/twilio/voice"

    @property
    def status(self) -> str:
        return f"{self.base}/twilio/status"


@pytest.fixture
async def serve(nursery: trio.Nursery, twilio_rest: TwilioRestFake, twilio_auth_token: str):  # noqa: F811
    """`served = await serve(capacity=..., **settings)`: the provider's routes on loopback."""

    async def start(capacity: int = 10, **settings: Any) -> Served:
        values: dict[str, Any] = {"api_base_url": twilio_rest.url, "start_timeout_s": 2.0}
        values.update(settings)
        telephony = TwilioTelephony(
            TwilioSettings(**values),
            auth_token=twilio_auth_token,
            account_sid=DEFAULT_ACCOUNT_SID,
            limiter=trio.CapacityLimiter(4),
            busy_message=BUSY,
        )
        handler = RecordingHandler(capacity)
        port = await nursery.start(serve_asgi, asgi_app(telephony.routes(handler)), "127.0.0.1", 0)
        return Served(f"http://127.0.0.1:{port}", telephony, handler, twilio_rest)

    return start

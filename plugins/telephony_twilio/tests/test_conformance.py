"""hookline's CallLeg conformance suite against the real Twilio leg: the provider's routes
on a real Hypercorn server, a simulated caller from the Twilio simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trio

from hookline.providers import CallInfo, CallLeg
from hookline.server import asgi_app, serve_asgi
from hookline.testing.conformance import CallLegConformance
from hookline_telephony_twilio import TwilioSettings, TwilioTelephony


class HandOver:
    """A CallHandler that hands each admitted leg to the test and holds the call until
    the test lets go (the suite reads the leg's events itself, as the engine would)."""

    def __init__(self) -> None:
        self.send_leg, self.legs = trio.open_memory_channel[CallLeg](1)
        self.done = trio.Event()

    def try_admit(self) -> bool:
        return True

    def release(self) -> None:
        pass

    async def run_call(self, leg: CallLeg) -> None:
        await self.send_leg.send(leg)
        await self.done.wait()

    def record_rejected(self, info: CallInfo, reason: str) -> None:
        raise AssertionError(f"call rejected: {reason}")

    def record_status(self, provider_call_id: str, fields: Any) -> None:
        pass


class TestTwilioLegConformance(CallLegConformance):
    # `twilio_sim`, `twilio_rest` and `twilio_auth_token` are the simulator's fixtures.
    @pytest.fixture
    async def sim_call(
        self, nursery: trio.Nursery, twilio_sim: Any, twilio_rest: Any, twilio_auth_token: str
    ) -> AsyncIterator[tuple[CallLeg, Any]]:
        telephony = TwilioTelephony(
            TwilioSettings(api_base_url=twilio_rest.url, start_timeout_s=5.0),
            auth_token=twilio_auth_token,
            account_sid=twilio_sim.account_sid,
            limiter=trio.CapacityLimiter(4),
            busy_message="busy",
        )
        handler = HandOver()
        port = await nursery.start(serve_asgi, asgi_app(telephony.routes(handler)), "127.0.0.1", 0)
        voice = f"http://127.0.0.1:{port}/twilio/voice"
        async with twilio_sim.call(voice) as call:
            with trio.fail_after(10):
                leg = await handler.legs.receive()
            yield leg, call
            handler.done.set()

    @pytest.fixture
    def leg(self, sim_call: tuple[CallLeg, Any]) -> CallLeg:
        return sim_call[0]

    @pytest.fixture
    def hang_up_caller(self, sim_call: tuple[CallLeg, Any]) -> Callable[[], Awaitable[None]]:
        return sim_call[1].hangup

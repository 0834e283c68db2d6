"""What every telephony `CallLeg` must do (see `hookline.testing.conformance`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from ...audio import SAMPLE_RATE, tone_mulaw
from ...providers import CallInfo, CallLeg, HangUp, LegEvent, MarkReached

__all__ = ["CallLegConformance"]


class _Inbound:
    """Reads `leg.events()` the way the engine does (one reader, all the call long)."""

    def __init__(self) -> None:
        self.events: list[LegEvent] = []
        self.ended = trio.Event()
        self._changed = trio.Event()

    async def read(self, leg: Any) -> None:
        try:
            async for event in leg.events():
                self.events.append(event)
                self._poke()
        finally:
            self.ended.set()
            self._poke()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    @property
    def marks(self) -> list[str]:
        return [e.name for e in self.events if isinstance(e, MarkReached)]

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            if self.ended.is_set():
                raise AssertionError(f"the event stream ended first; got {self.events!r}")
            await self._changed.wait()


@asynccontextmanager
async def _reading(leg: Any) -> AsyncIterator[_Inbound]:
    inbound = _Inbound()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(inbound.read, leg)
        yield inbound
        nursery.cancel_scope.cancel()


class CallLegConformance:
    """Fixtures to provide: `leg`, a connected CallLeg whose far end plays our audio back
    (in real time or on the test's clock) and stays on the line until the test ends, and
    `hang_up_caller()`, an async callable that makes the caller hang up.

    Optional: `wait_s`, seconds to wait for anything the far end does. With a MockClock
    (autojump), every wait is on that clock.
    """

    @pytest.fixture
    def wait_s(self) -> float:
        return 10.0

    async def test_is_a_call_leg(self, leg: Any) -> None:
        assert isinstance(leg, CallLeg)
        assert isinstance(leg.info, CallInfo) and leg.info.call_id

    async def test_marks_come_back_in_order(self, leg: Any, wait_s: float) -> None:
        async with _reading(leg) as inbound:
            with trio.fail_after(wait_s):
                for name in ("one", "two", "three"):
                    await leg.play(tone_mulaw(0.1))
                    await leg.mark(name)
                await leg.mark("no-audio-before-me")
                await inbound.wait_for(lambda: len(inbound.marks) == 4)
        assert inbound.marks == ["one", "two", "three", "no-audio-before-me"]

    async def test_play_never_blocks_the_call(self, leg: Any, wait_s: float) -> None:
        # A minute of speech, as one piece and as 20 ms frames, is queued far faster than
        # it plays: play returns while the far end is still listening.
        audio = tone_mulaw(60.0)
        bound = min(wait_s, len(audio) / SAMPLE_RATE / 4)
        async with _reading(leg) as inbound:
            with trio.fail_after(bound):
                await leg.play(audio)
                for i in range(0, 8000, 160):
                    await leg.play(audio[i : i + 160])
                await leg.mark("queued")
            assert "queued" not in inbound.marks, "a mark came back before its audio played"
            await leg.clear()  # leave the line quiet for the fixture's tear-down

    async def test_clear_returns_every_pending_mark_at_once(self, leg: Any, wait_s: float) -> None:
        long = tone_mulaw(30.0)
        async with _reading(leg) as inbound:
            await leg.play(long)
            await leg.mark("first")
            await leg.play(long)
            await leg.mark("second")
            await leg.clear()
            # Pending marks are not lost: both come back long before the audio could play.
            with trio.fail_after(min(wait_s, 15.0)):
                await inbound.wait_for(lambda: len(inbound.marks) == 2)
            assert inbound.marks == ["first", "second"]
            # The leg is still good for what comes next.
            with trio.fail_after(wait_s):
                await leg.play(tone_mulaw(0.1))
                await leg.mark("after")
                await inbound.wait_for(lambda: "after" in inbound.marks)
        assert inbound.marks == ["first", "second", "after"]

    async def test_caller_hang_up_ends_the_events(
        self, leg: Any, hang_up_caller: Any, wait_s: float
    ) -> None:
        async with _reading(leg) as inbound:
            with trio.fail_after(wait_s):
                await hang_up_caller()
                await inbound.ended.wait()
        assert inbound.events and isinstance(inbound.events[-1], HangUp)
        assert sum(isinstance(e, HangUp) for e in inbound.events) == 1

    async def test_our_hang_up_ends_the_events(self, leg: Any, wait_s: float) -> None:
        async with _reading(leg) as inbound:
            with trio.fail_after(wait_s):
                await leg.play(tone_mulaw(0.1))
                await leg.hangup()
                await inbound.ended.wait()
        assert sum(isinstance(e, HangUp) for e in inbound.events) <= 1
        if any(isinstance(e, HangUp) for e in inbound.events):
            assert isinstance(inbound.events[-1], HangUp)

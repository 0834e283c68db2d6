"""Loop lag is the runtime's, not the providers': when the trio thread is blocked while a
provider's answer is due, the turn books that time as `loop_lag` and runtime overhead,
not as `stt_final`, `llm_first_token` or `tts_first_byte`.

Real clock (the stalls are real `time.sleep`s on the trio thread, as a busy process has
them); the providers are scripted and answer within 50 ms. The bounds are derived from
the injected stalls, so a slow machine makes the figures larger, never the test fail.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from hypothesis import given
from hypothesis import strategies as st

from hookline.audio import AudioFormat, rms_mulaw
from hookline.engine.metrics import LoopLag, TurnTiming
from hookline.events import TurnMetrics
from hookline.hookspecs import hookimpl
from hookline.providers import CallInfo
from hookline.testing.harness import make_config, run_call, scripted_runtime
from hookline.testing.scripted import (
    SPEECH_LEVEL,
    HangUpStep,
    Reply,
    Say,
    ScriptedLeg,
    ScriptedLLM,
    ScriptedSTT,
    ScriptedTTS,
    WaitForAgent,
    call_info,
)

STALL_S = 0.4  # each stall blocks the trio thread this long
ANSWER_S = 0.05  # what the scripted LLM and TTS take to answer


class Stalls:
    """Blocks the trio thread for STALL_S, once per `trigger(window)`, from its own task:
    the load of other calls, landing while a provider's answer is due."""

    def __init__(self) -> None:
        self.windows: list[str] = []
        self._send, self._receive = trio.open_memory_channel[str](8)

    def trigger(self, window: str) -> None:
        self._send.send_nowait(window)

    async def run(self) -> None:
        async for window in self._receive:
            time.sleep(STALL_S)  # noqa: ASYNC251 - the point: the trio thread is blocked
            self.windows.append(window)


class StallingSTTStream:
    """The scripted STT stream; the caller's first silent frame after speech (the turn's
    STT share has begun) stalls the loop before the final is due."""

    def __init__(self, inner: Any, stalls: Stalls) -> None:
        self._inner, self._stalls, self._voiced = inner, stalls, False

    async def send(self, audio: bytes) -> None:
        voiced = rms_mulaw(audio) > SPEECH_LEVEL
        if self._voiced and not voiced:
            self._stalls.trigger("stt")
        self._voiced = voiced
        await self._inner.send(audio)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __aiter__(self) -> Any:
        return self._inner.__aiter__()


class StallingSTT(ScriptedSTT):
    def __init__(self, stalls: Stalls, **kw: Any) -> None:
        super().__init__(**kw)
        self._stalls = stalls

    @asynccontextmanager
    async def open(self, fmt: AudioFormat, call: CallInfo) -> AsyncIterator[Any]:
        async with super().open(fmt, call) as stream:
            yield StallingSTTStream(stream, self._stalls)


class StallingTTSStream:
    """The scripted TTS stream; the first flush (the TTS share has begun) stalls the loop
    before the first byte is due."""

    def __init__(self, inner: Any, stalls: Stalls) -> None:
        self._inner, self._stalls, self._flushed = inner, stalls, False

    async def flush(self) -> None:
        if not self._flushed:
            self._flushed = True
            self._stalls.trigger("tts")
        await self._inner.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __aiter__(self) -> Any:
        return self._inner.__aiter__()


class StallingTTS(ScriptedTTS):
    def __init__(self, stalls: Stalls, **kw: Any) -> None:
        super().__init__(**kw)
        self._stalls = stalls

    @asynccontextmanager
    async def open(self, fmt: AudioFormat, call: CallInfo) -> AsyncIterator[Any]:
        async with super().open(fmt, call) as stream:
            yield StallingTTSStream(stream, self._stalls)


class Recorder:
    def __init__(self) -> None:
        self.metrics: list[dict[str, float]] = []

    @hookimpl
    def hookline_call_event(self, call: Any, event: Any) -> None:
        if isinstance(event, TurnMetrics):
            self.metrics.append(event.metrics)


async def test_a_blocked_trio_thread_is_runtime_overhead_not_provider_latency() -> None:
    stalls = Stalls()

    def answer(messages: Any) -> Reply:
        stalls.trigger("llm")  # the LLM share has begun
        return Reply("We open at eight.", first_token_s=ANSWER_S, tokens_per_s=200)

    stt = StallingSTT(stalls, word_s=0.08, endpointing_s=0.15, utterance_end_s=0.5)
    recorder = Recorder()
    config = make_config(
        agent={"fillers": []}, policy={"filler_after_s": 30, "llm_filler_after_s": 30}
    )
    runtime = await scripted_runtime(
        config,
        stt=stt,
        llm=ScriptedLLM(respond=answer),
        tts=StallingTTS(stalls, ttfb_s=ANSWER_S, chars_per_s=400),
        plugins=[recorder],
    )
    script = [WaitForAgent(), Say("When do you open"), WaitForAgent(), HangUpStep()]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runtime.loop_lag.run)
        nursery.start_soon(stalls.run)
        record = await run_call(runtime, ScriptedLeg(call_info(), script, stt, word_s=0.08))
        nursery.cancel_scope.cancel()

    assert record.end_reason == "caller_hangup"
    assert sorted(stalls.windows) == ["llm", "stt", "tts"]
    (m,) = [m for m in recorder.metrics if "voice_to_voice" in m]
    stall_ms = STALL_S * 1000
    # The probe sees each stall, less at most one tick (its deadline may fall inside it).
    seen_ms = 3 * (stall_ms - runtime.loop_lag.tick_s * 1000 - 5)
    assert m["loop_lag"] >= seen_ms
    assert m["runtime_overhead"] >= seen_ms
    assert m["voice_to_voice"] >= m["runtime_overhead"]
    # Each stall fell inside one provider's share, and none of it is booked there.
    for share in ("stt_final", "end_of_turn_delay", "llm_first_token", "tts_first_byte"):
        assert m[share] < stall_ms, (share, m)


def test_lag_between_sums_the_late_time_inside_the_window() -> None:
    lag = LoopLag(tick_s=0.02)
    lag._late.extend([(1.0, 1.3), (2.0, 2.1), (5.0, 5.5)])
    assert round(lag.between(0.0, 10.0), 6) == 0.9
    assert round(lag.between(1.2, 2.05), 6) == 0.15
    assert lag.between(3.0, 4.0) == 0.0


def _walked(late: list[tuple[float, float]], t0: float, t1: float, tick: float, start: bool):
    """`between` and `delaying` as a walk over every interval, newest first."""
    inside = delaying = 0.0
    for begin, end in reversed(late):
        overlap = max(0.0, min(end, t1) - max(begin, t0))
        inside += overlap
        if overlap and (end > t1 - tick or (start and begin < t0 + 2 * tick)):
            delaying += overlap
    return inside, delaying


@given(
    gaps=st.lists(st.tuples(st.floats(0.0, 0.5), st.floats(0.001, 0.3)), max_size=60),
    t0=st.floats(0.0, 20.0),
    width=st.floats(0.0, 5.0),
    start=st.booleans(),
)
def test_the_lag_in_a_window_is_what_a_walk_over_every_stall_finds(
    gaps: list[tuple[float, float]], t0: float, width: float, start: bool
) -> None:
    """The probe's late intervals are in order and never overlap, so `between` and
    `delaying` find a window's by bisection; they add up what a walk over all finds."""
    lag, t = LoopLag(tick_s=0.02), 0.0
    for gap, length in gaps:
        lag._late.append((t + gap, t + gap + length))
        t += gap + length
    t1 = t0 + width
    inside, delaying = _walked(list(lag._late), t0, t1, lag.tick_s, start)
    assert abs(lag.between(t0, t1) - inside) < 1e-9
    assert abs(lag.delaying(t0, t1, start=start) - delaying) < 1e-9


def test_without_the_probe_no_lag_is_booked() -> None:
    timing = TurnTiming(
        speech_end=0.0, last_final=0.3, turn_end=0.3, llm_start=0.3, llm_first_token=0.6,
        first_sentence=0.6, tts_request=0.6, tts_first_byte=0.9, first_audio=0.9,
    )  # fmt: skip
    assert LoopLag().for_turns() is None
    m = timing.metrics(None)
    assert "loop_lag" not in m and m["llm_first_token"] == 300.0
    lag = LoopLag(tick_s=0.02)
    lag._late.append((0.3, 0.55))  # the thread stalled as the LLM request went out
    m = timing.metrics(lag)
    assert m["llm_first_token"] == 50.0 and m["runtime_overhead"] == 250.0


def test_delaying_counts_the_stalls_at_the_ends_whole() -> None:
    lag = LoopLag(tick_s=0.02)
    lag._late.extend([(0.95, 1.03), (1.2, 1.3), (1.47, 1.49), (1.6, 1.65)])
    # At the end of [1.0, 1.5]: the stall the thread was still in a tick before 1.5.
    assert round(lag.delaying(1.0, 1.5, start=False), 6) == 0.02
    # ... and at its start, the one under way then (clipped to the window).
    assert round(lag.delaying(1.0, 1.5, start=True), 6) == 0.05
    # A stall that began before and went on past the end counts whole inside the window.
    assert round(lag.delaying(1.21, 1.25, start=False), 6) == 0.04
    assert lag.delaying(1.31, 1.46, start=True) == 0.0  # nothing near either end


def test_a_stall_the_probe_saw_a_tick_late_at_the_start_is_the_runtimes() -> None:
    """The probe sees a stall begin at its own deadline, up to a tick after the stall
    began. Its last look on time at 1.005, just after the request's 1.0 (its task ran
    after the request's in that pass): its next deadline, 1.025, fell inside a stall that
    began by then, which held the request back. (Under load this stall was booked as the
    TTS's latency: the blocked-thread test above failed 5 runs in 22.)"""
    lag = LoopLag(tick_s=0.02)
    lag._late.append((1.025, 1.4))
    assert round(lag.delaying(1.0, 1.45, start=True), 6) == 0.375
    # Seen beginning over two ticks after t0: it began after the probe's on-time look,
    # over a tick after the request went out.
    lag = LoopLag(tick_s=0.02)
    lag._late.append((1.045, 1.4))
    assert lag.delaying(1.0, 1.45, start=True) == 0.0


def test_a_stall_the_thread_was_over_before_the_final_is_not_the_runtimes() -> None:
    """The STT's endpointing runs on audio time (~300 ms of it here): a stall 200 ms
    before the final, after which the thread was on time again, did not delay it; the
    one just before the final did, and is booked whole."""
    timing = TurnTiming(
        speech_end=10.0, last_final=10.3, turn_end=10.3, llm_start=10.3,
        llm_first_token=10.305, first_sentence=10.306, tts_request=10.306,
        tts_first_byte=10.309, first_audio=10.31,
    )  # fmt: skip
    lag = LoopLag(tick_s=0.02)
    lag._late.append((10.06, 10.1))  # 40 ms, over 200 ms before the final
    m = timing.metrics(lag)
    assert m["stt_final"] == 300.0 and m["end_of_turn_delay"] == 300.0
    assert m["runtime_overhead"] == 1.0
    assert m["loop_lag"] == 0.0  # of the overhead; the stall stayed in the STT's share
    lag._late.append((10.29, 10.304))  # the thread was late when the final came in
    m = timing.metrics(lag)
    assert m["stt_final"] == 290.0 and m["llm_first_token"] == 1.0
    assert m["runtime_overhead"] == 1.0 + 10.0 + 4.0
    assert m["loop_lag"] == 10.0 + 4.0

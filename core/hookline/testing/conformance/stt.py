"""What every STT provider must do (see `hookline.testing.conformance`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio

from ...audio import FRAME_SECONDS, MULAW_8K, mulaw_silence, tone_mulaw
from ...providers import STT, SpeechStarted, Transcript, UtteranceEnd
from ..scripted import call_info

__all__ = ["STTConformance"]

_FRAME_TONE = tone_mulaw(FRAME_SECONDS)
_FRAME_SILENCE = mulaw_silence(FRAME_SECONDS)


async def _send(stream: Any, frame: bytes, seconds: float, pace: float) -> None:
    for _ in range(round(seconds / FRAME_SECONDS)):
        await stream.send(frame)
        await trio.sleep(pace)


async def _collect(stream: Any, until: Callable[[Any], bool], wait_s: float) -> list[Any]:
    events: list[Any] = []
    with trio.move_on_after(wait_s):
        async for event in stream:
            events.append(event)
            if until(event):
                break
    return events


class STTConformance:
    """Fixtures to provide: `stt` (the provider) and `expect(call_id, text)`.

    Optional: `pace` (seconds to sleep between 20 ms frames; 0 sends as fast as the
    provider takes them) and `wait_s` (seconds to wait for results).
    """

    @pytest.fixture
    def pace(self) -> float:
        return 0.0

    @pytest.fixture
    def wait_s(self) -> float:
        return 10.0

    async def test_is_an_stt_provider(self, stt: Any) -> None:
        assert isinstance(stt, STT)

    async def test_final_transcript_with_timings(
        self, stt: Any, expect: Any, pace: float, wait_s: float
    ) -> None:
        info = call_info()
        expect(info.call_id, "I need an oil change")
        async with stt.open(MULAW_8K, info) as stream:
            async with trio.open_nursery() as nursery:

                async def speak() -> None:
                    await _send(stream, _FRAME_SILENCE, 0.4, pace)
                    await _send(stream, _FRAME_TONE, 1.2, pace)
                    await _send(stream, _FRAME_SILENCE, 2.0, pace)

                nursery.start_soon(speak)

                def done(e: Any) -> bool:
                    return isinstance(e, Transcript) and e.is_final and e.speech_final

                events = await _collect(stream, done, wait_s)
                nursery.cancel_scope.cancel()
        finals = [e for e in events if isinstance(e, Transcript) and e.is_final]
        assert finals, f"no final transcript; got {events!r}"
        assert finals[-1].text.strip(" .").lower() == "i need an oil change"
        assert finals[-1].speech_final
        # Timings are seconds of call audio: speech ran from 0.4 s to 1.6 s.
        assert finals[-1].start == pytest.approx(0.4, abs=0.25)
        assert finals[-1].end == pytest.approx(1.6, abs=0.25)
        interims = [e for e in events if isinstance(e, Transcript) and not e.is_final]
        assert interims, "interim results come before the final"
        assert events.index(interims[0]) < events.index(finals[-1])

    async def test_speech_started_and_utterance_end(
        self, stt: Any, expect: Any, pace: float, wait_s: float
    ) -> None:
        info = call_info()
        expect(info.call_id, "hello")
        async with stt.open(MULAW_8K, info) as stream:
            async with trio.open_nursery() as nursery:

                async def speak() -> None:
                    await _send(stream, _FRAME_TONE, 0.5, pace)
                    await _send(stream, _FRAME_SILENCE, 3.0, pace)

                nursery.start_soon(speak)
                events = await _collect(stream, lambda e: isinstance(e, UtteranceEnd), wait_s)
                nursery.cancel_scope.cancel()
        kinds = [type(e) for e in events]
        assert SpeechStarted in kinds and UtteranceEnd in kinds
        assert kinds.index(SpeechStarted) < kinds.index(UtteranceEnd)

    async def test_two_utterances_in_order(
        self, stt: Any, expect: Any, pace: float, wait_s: float
    ) -> None:
        info = call_info()
        expect(info.call_id, "first one")
        expect(info.call_id, "second one")
        finals: list[Transcript] = []
        async with stt.open(MULAW_8K, info) as stream:
            async with trio.open_nursery() as nursery:

                async def speak() -> None:
                    for _ in range(2):
                        await _send(stream, _FRAME_TONE, 0.6, pace)
                        await _send(stream, _FRAME_SILENCE, 1.5, pace)

                nursery.start_soon(speak)

                def done(e: Any) -> bool:
                    if isinstance(e, Transcript) and e.is_final and e.text:
                        finals.append(e)
                    return len(finals) == 2

                await _collect(stream, done, wait_s)
                nursery.cancel_scope.cancel()
        assert [f.text.strip(" .").lower() for f in finals] == ["first one", "second one"]
        assert finals[0].end <= finals[1].start

    async def test_send_and_finalize_after_close_are_no_ops(
        self, stt: Any, expect: Any, wait_s: float
    ) -> None:
        info = call_info()
        expect(info.call_id, "too late")
        async with stt.open(MULAW_8K, info) as stream:
            await stream.send(_FRAME_SILENCE)
        # The caller's audio keeps coming while a call winds down: dropped, never raised.
        with trio.fail_after(wait_s):
            for frame in (_FRAME_TONE, _FRAME_TONE, _FRAME_SILENCE):
                await stream.send(frame)
            await stream.finalize()

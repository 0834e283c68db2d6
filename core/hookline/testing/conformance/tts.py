"""What every TTS provider must do (see `hookline.testing.conformance`)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from ...audio import MULAW_8K
from ...providers import TTS, AudioChunk, Flushed
from ..scripted import call_info

__all__ = ["TTSConformance"]


async def _until_flushed(stream: Any, sequence: int, wait_s: float) -> tuple[bytes, list[int]]:
    audio = bytearray()
    flushed: list[int] = []
    with trio.fail_after(wait_s):
        async for event in stream:
            if isinstance(event, AudioChunk):
                audio += event.audio
            elif isinstance(event, Flushed):
                flushed.append(event.sequence)
                if event.sequence >= sequence:
                    break
    return bytes(audio), flushed


class TTSConformance:
    """Fixture to provide: `tts` (the provider). Optional: `wait_s`, seconds to wait for results."""

    @pytest.fixture
    def wait_s(self) -> float:
        return 10.0

    async def test_is_a_tts_provider(self, tts: Any) -> None:
        assert isinstance(tts, TTS)

    async def test_speak_flush_gives_audio_then_flushed(self, tts: Any, wait_s: float) -> None:
        async with tts.open(MULAW_8K, call_info()) as stream:
            await stream.speak("Your car will be ready at five.")
            await stream.flush()
            audio, flushed = await _until_flushed(stream, 1, wait_s)
        assert flushed == [1]
        assert len(audio) >= 800, "at least 0.1 s of 8 kHz mu-law audio"

    async def test_flushes_are_answered_in_order(self, tts: Any, wait_s: float) -> None:
        async with tts.open(MULAW_8K, call_info()) as stream:
            for text in ("First sentence.", "Second sentence.", "Third one."):
                await stream.speak(text)
                await stream.flush()
            _, flushed = await _until_flushed(stream, 3, wait_s)
        assert flushed == [1, 2, 3]

    async def test_clear_drops_pending_speech(self, tts: Any, wait_s: float) -> None:
        async with tts.open(MULAW_8K, call_info()) as stream:
            await stream.speak("This sentence is long and will be interrupted by the caller. " * 3)
            await stream.flush()
            await stream.clear()
            await stream.speak("After the clear.")
            await stream.flush()
            _, flushed = await _until_flushed(stream, 2, wait_s)
        assert flushed == [2], "a cleared flush is never answered"

    async def test_synthesize_returns_audio(self, tts: Any) -> None:
        audio = await tts.synthesize("Thanks for calling.", MULAW_8K)
        assert isinstance(audio, bytes) and len(audio) >= 800

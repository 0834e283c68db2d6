"""Helpers shared by the tts_deepgram tests (uniquely named: see conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from hookline.providers import AudioChunk, CallInfo, Flushed, TTSEvent
from hookline_testkit.fake_deepgram_tts import FakeDeepgramTTS
from hookline_tts_deepgram import DeepgramTTS, DeepgramTTSSettings


def settings_for(fake: FakeDeepgramTTS, **overrides: object) -> DeepgramTTSSettings:
    """Plugin settings pointed at the fake, with short retry delays."""
    fields: dict[str, object] = {
        "url": fake.url,
        "base_url": fake.base_url,
        "retry_base_s": 0.01,
        "connect_timeout_s": 2.0,
    }
    fields.update(overrides)
    return DeepgramTTSSettings(**fields)  # type: ignore[arg-type]


async def collect_until(stream: AsyncIterator[TTSEvent], sequence: int) -> list[TTSEvent]:
    """Events up to and including Flushed(sequence)."""
    events: list[TTSEvent] = []
    async for event in stream:
        events.append(event)
        if isinstance(event, Flushed) and event.sequence == sequence:
            return events
    raise AssertionError(f"stream ended before Flushed({sequence}): {events}")


def audio_between_flushes(events: list[TTSEvent]) -> list[bytes]:
    """The audio yielded before each Flushed, one entry per Flushed."""
    out, current = [], b""
    for event in events:
        if isinstance(event, AudioChunk):
            current += event.audio
        else:
            out.append(current)
            current = b""
    return out


CALL = CallInfo(call_id="tts-test-call")


def make_tts(fake: FakeDeepgramTTS, **overrides: object) -> DeepgramTTS:
    return DeepgramTTS(settings_for(fake, **overrides), fake.api_key)


def flushed_sequences(events: list[TTSEvent]) -> list[int]:
    return [e.sequence for e in events if isinstance(e, Flushed)]

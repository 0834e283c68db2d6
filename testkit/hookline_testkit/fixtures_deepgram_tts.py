"""pytest fixtures for the fake Deepgram TTS server (imported by the hookline pytest plugin)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .fake_deepgram_tts import FakeDeepgramTTS, serve_fake_deepgram_tts

__all__ = ["fake_deepgram_tts"]


@pytest.fixture
async def fake_deepgram_tts() -> AsyncIterator[FakeDeepgramTTS]:
    """A running fake (`fake.url`, `fake.base_url`, `fake.api_key`); tweak its attributes
    (chars_per_second, ttfb_s, chunk_interval_s, faults) in the test before use."""
    async with serve_fake_deepgram_tts() as fake:
        yield fake

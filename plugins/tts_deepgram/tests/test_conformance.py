"""hookline's TTS conformance suite against this provider and the loopback fake."""

from __future__ import annotations

import pytest
from tts_deepgram_helpers import make_tts

from hookline.testing.conformance import TTSConformance
from hookline_testkit.fake_deepgram_tts import FakeDeepgramTTS
from hookline_tts_deepgram import DeepgramTTS


class TestDeepgramTTSConformance(TTSConformance):
    @pytest.fixture
    async def tts(self, fake_deepgram_tts: FakeDeepgramTTS) -> DeepgramTTS:
        return make_tts(fake_deepgram_tts)

    @pytest.fixture
    def wait_s(self) -> float:
        return 5.0

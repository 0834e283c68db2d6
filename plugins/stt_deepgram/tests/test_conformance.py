"""The core's STT conformance suite, run against the plugin and the loopback fake."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from hookline.testing.conformance import STTConformance
from hookline_stt_deepgram import DeepgramSTT, DeepgramSTTSettings


class TestDeepgramSTTConformance(STTConformance):
    # `fake_deepgram_stt` is the loopback fake's fixture from hookline's pytest plugin.
    @pytest.fixture
    def stt(self, fake_deepgram_stt: Any) -> DeepgramSTT:
        return DeepgramSTT(
            DeepgramSTTSettings(url=fake_deepgram_stt.url), api_key=fake_deepgram_stt.api_key
        )

    @pytest.fixture
    def expect(self, fake_deepgram_stt: Any) -> Callable[[str, str], None]:
        return fake_deepgram_stt.expect

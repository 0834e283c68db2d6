"""The core's STT conformance suite, run against the plugin and the loopback fake."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from hookline.testing.conformance import STTConformance
from hookline_stt_deepgram import DeepgramSTT, DeepgramSTTSettings
from hookline_testkit.fake_deepgram_stt import FakeDeepgramSTT, fake_deepgram_stt


class TestDeepgramSTTConformance(STTConformance):
    @pytest.fixture
    async def fake(self) -> AsyncIterator[FakeDeepgramSTT]:
        async with fake_deepgram_stt() as fake:
            yield fake

    @pytest.fixture
    def stt(self, fake: FakeDeepgramSTT) -> DeepgramSTT:
        return DeepgramSTT(DeepgramSTTSettings(url=fake.url), api_key=fake.api_key)

    @pytest.fixture
    def expect(self, fake: FakeDeepgramSTT) -> Callable[[str, str], None]:
        return fake.expect

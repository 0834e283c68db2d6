"""pytest fixtures for the fake Deepgram live STT server.

`fake_deepgram_stt`: a running `FakeDeepgramSTT` (loopback, ephemeral port) with the
default idle timeout; `deepgram_stt_env`: the environment a runtime needs to use it
(DEEPGRAM_API_KEY set to the fake's key), for `Secrets(deepgram_stt_env)`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .fake_deepgram_stt import FakeDeepgramSTT
from .fake_deepgram_stt import fake_deepgram_stt as _serve

__all__ = ["deepgram_stt_env", "fake_deepgram_stt"]


@pytest.fixture
async def fake_deepgram_stt() -> AsyncIterator[FakeDeepgramSTT]:
    async with _serve() as fake:
        yield fake


@pytest.fixture
def deepgram_stt_env(fake_deepgram_stt: FakeDeepgramSTT) -> dict[str, str]:
    return {"DEEPGRAM_API_KEY": fake_deepgram_stt.api_key}

"""REST synthesis (deepgram-sdk's async client under trio) against the loopback fake."""

from __future__ import annotations

import pytest
from tts_deepgram_helpers import make_tts

from hookline.audio import MULAW_8K
from hookline.errors import ProviderAuthError, ProviderError, ProviderUnavailable
from hookline_testkit.fake_deepgram_tts import FakeDeepgramTTS


async def test_synthesize_returns_the_whole_phrase(fake_deepgram_tts: FakeDeepgramTTS) -> None:
    fake = fake_deepgram_tts
    tts = make_tts(fake)
    audio = await tts.synthesize("Thanks for calling Riverside Auto Service.", MULAW_8K)
    assert audio == fake.audio_for("Thanks for calling Riverside Auto Service.")
    [request] = fake.rest_requests
    assert request.status == 200
    # raw mu-law at 8 kHz with no WAV header, the configured voice
    assert request.params == {
        "model": "aura-2-thalia-en",
        "encoding": "mulaw",
        "sample_rate": "8000",
        "container": "none",
    }


async def test_synthesize_retries_after_429_and_500(fake_deepgram_tts: FakeDeepgramTTS) -> None:
    fake = fake_deepgram_tts
    fake.rest_errors = [429, 500]
    tts = make_tts(fake)
    audio = await tts.synthesize("One moment, let me check that.", MULAW_8K)
    assert audio == fake.audio_for("One moment, let me check that.")
    assert [r.status for r in fake.rest_requests] == [429, 500, 200]


async def test_synthesize_honours_retry_after_up_to_the_cap(
    fake_deepgram_tts: FakeDeepgramTTS,
) -> None:
    fake = fake_deepgram_tts
    fake.rest_errors = [429]
    fake.rest_retry_after = "0.05"
    tts = make_tts(fake, retry_max_s=0.1)
    assert await tts.synthesize("Hi.", MULAW_8K) == fake.audio_for("Hi.")
    assert [r.status for r in fake.rest_requests] == [429, 200]


async def test_synthesize_gives_up_after_max_retries(fake_deepgram_tts: FakeDeepgramTTS) -> None:
    fake = fake_deepgram_tts
    fake.rest_errors = [503] * 10
    fake.rest_retry_after = "7"
    tts = make_tts(fake, max_retries=2, retry_max_s=0.01)
    with pytest.raises(ProviderUnavailable, match="503") as info:
        await tts.synthesize("Hello.", MULAW_8K)
    assert info.value.retry_after == 7.0  # the engine can still see the server's hint
    assert len(fake.rest_requests) == 3  # one try and two retries, no more


async def test_synthesize_with_a_refused_key_names_the_env_var(
    fake_deepgram_tts: FakeDeepgramTTS,
) -> None:
    fake = fake_deepgram_tts
    fake.reject_auth = True
    tts = make_tts(fake, api_key_env="MY_DG_KEY")
    with pytest.raises(ProviderAuthError) as info:
        await tts.synthesize("Hello.", MULAW_8K)
    assert "MY_DG_KEY" in str(info.value)
    assert "INVALID_AUTH" in str(info.value)
    assert len(fake.rest_requests) == 1  # auth errors are not retried


async def test_synthesize_rejects_empty_text_without_a_request(
    fake_deepgram_tts: FakeDeepgramTTS,
) -> None:
    tts = make_tts(fake_deepgram_tts)
    with pytest.raises(ProviderError, match="empty"):
        await tts.synthesize("  ", MULAW_8K)
    assert fake_deepgram_tts.rest_requests == []


async def test_synthesize_when_nobody_listens_is_unavailable(
    fake_deepgram_tts: FakeDeepgramTTS,
) -> None:
    import trio

    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tts = make_tts(fake_deepgram_tts, base_url=f"http://127.0.0.1:{port}", max_retries=1)
    with pytest.raises(ProviderUnavailable, match="REST synthesis"):
        await tts.synthesize("Hello.", MULAW_8K)

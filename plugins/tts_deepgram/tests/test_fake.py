"""The fake Deepgram TTS server itself, driven with a plain WebSocket/HTTP client, so the
plugin's tests rest on a fake that behaves like protocols.md §3 says."""

from __future__ import annotations

import httpx
import msgspec
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from hookline_testkit.fake_deepgram_tts import FakeDeepgramTTS


def _auth(fake: FakeDeepgramTTS) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Token {fake.api_key}".encode())]


async def _texts_until(ws, kind: str) -> tuple[list[dict], int]:
    """JSON messages up to and including the first of type `kind`; audio bytes seen."""
    messages, audio = [], 0
    while True:
        raw = await ws.get_message()
        if isinstance(raw, bytes):
            audio += len(raw)
            continue
        message = msgspec.json.decode(raw)
        messages.append(message)
        if message["type"] == kind:
            return messages, audio


async def test_metadata_then_audio_then_flushed(fake_deepgram_tts: FakeDeepgramTTS) -> None:
    fake = fake_deepgram_tts
    url = fake.url + "?model=aura-2-thalia-en&encoding=mulaw&sample_rate=8000"
    async with open_websocket_url(url, extra_headers=_auth(fake)) as ws:
        first = msgspec.json.decode(await ws.get_message())
        assert first["type"] == "Metadata" and first["model_name"] == "aura-2-thalia-en"
        await ws.send_message('{"type":"Speak","text":"Hello "}')
        await ws.send_message('{"type":"Speak","text":"world."}')
        await ws.send_message('{"type":"Flush"}')
        messages, audio = await _texts_until(ws, "Flushed")
        assert messages == [{"type": "Flushed", "sequence_id": 0}]
        assert audio == len(fake.audio_for("Hello world.")) == round(12 / 50 * 8000)
        await ws.send_message('{"type":"Close"}')
        with pytest.raises(ConnectionClosed):
            await ws.get_message()
    [conn] = fake.connections
    assert conn.speaks == ["Hello ", "world."] and conn.flushes == ["Hello world."]
    assert conn.closed_by_client


async def test_more_than_20_flushes_a_minute_get_a_warning(
    fake_deepgram_tts: FakeDeepgramTTS,
) -> None:
    fake = fake_deepgram_tts
    async with open_websocket_url(fake.url, extra_headers=_auth(fake)) as ws:
        await ws.get_message()  # Metadata
        for _ in range(21):
            await ws.send_message('{"type":"Speak","text":"Hi."}')
            await ws.send_message('{"type":"Flush"}')
        messages, _ = await _texts_until(ws, "Warning")
    assert fake.warnings_sent == 1
    assert len(fake.flushed_texts) == 20  # the 21st was ignored
    assert messages[-1]["code"] == "FLUSH_LIMIT_EXCEEDED"


async def test_clear_stops_audio_and_answers_cleared(fake_deepgram_tts: FakeDeepgramTTS) -> None:
    fake = fake_deepgram_tts
    fake.chunk_bytes = 160
    fake.chunk_interval_s = 0.01
    async with open_websocket_url(fake.url, extra_headers=_auth(fake)) as ws:
        await ws.get_message()
        await ws.send_message('{"type":"Speak","text":"' + "long text " * 20 + '"}')
        await ws.send_message('{"type":"Flush"}')
        assert isinstance(await ws.get_message(), bytes)
        await ws.send_message('{"type":"Clear"}')
        messages, _ = await _texts_until(ws, "Cleared")
        assert [m["type"] for m in messages] == ["Cleared"]  # never Flushed
        # Nothing of the cleared text follows Cleared.
        with trio.move_on_after(0.1):
            extra = await ws.get_message()
            pytest.fail(f"message after Cleared: {extra!r}")
    assert fake.connections[0].audio_bytes_sent < len(fake.audio_for("long text " * 20))


async def test_bad_key_is_refused_at_the_handshake(fake_deepgram_tts: FakeDeepgramTTS) -> None:
    fake = fake_deepgram_tts
    with pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(fake.url, extra_headers=[(b"authorization", b"Token no")]):
            pass
    assert info.value.status_code == 401
    assert msgspec.json.decode(info.value.body)["err_code"] == "INVALID_AUTH"


async def test_rest_speak_errors_and_audio(fake_deepgram_tts: FakeDeepgramTTS) -> None:
    fake = fake_deepgram_tts
    fake.rest_errors = [429]
    fake.rest_retry_after = "1"
    headers = {"authorization": f"Token {fake.api_key}"}
    async with httpx.AsyncClient(base_url=fake.base_url) as http:
        busy = await http.post("/v1/speak?model=m", json={"text": "Hi."}, headers=headers)
        assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
        assert busy.json()["err_code"] == "TOO_MANY_REQUESTS"
        ok = await http.post("/v1/speak?model=m", json={"text": "Hi."}, headers=headers)
        assert ok.status_code == 200 and ok.content == fake.audio_for("Hi.")
        assert ok.headers["dg-char-count"] == "3"
        refused = await http.post("/v1/speak", json={"text": "Hi."})
        assert refused.status_code == 401
        missing = await http.get("/v1/nothing", headers=headers)
        assert missing.status_code == 404
    assert [r.status for r in fake.rest_requests] == [429, 200, 401]
    assert fake.rest_texts == ["Hi."]

"""The Twilio simulator itself: what it sends is what Twilio sends."""

from __future__ import annotations

import wave

import msgspec
import pytest
import trio
import trio_websocket

from hookline.audio import mulaw_to_pcm16, tone_mulaw
from hookline_testkit.twilio_sim import SimulatorError, load_mulaw, parse_twiml


def test_load_mulaw_from_raw_and_wav(tmp_path):
    audio = tone_mulaw(0.1)
    raw = tmp_path / "hello.ulaw"
    raw.write_bytes(audio)
    assert load_mulaw(raw) == audio
    path = tmp_path / "hello.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(mulaw_to_pcm16(audio))
    assert load_mulaw(path) == audio  # mu-law -> PCM -> mu-law is lossless
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(b"\0\0" * 100)
    with pytest.raises(SimulatorError, match="8000 Hz"):
        load_mulaw(path)


def test_parse_twiml():
    stream, say, hangup = parse_twiml(
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        '<Stream url="wss://h/twilio/media" statusCallback="https://h/s">'
        '<Parameter name="token" value="t"/></Stream></Connect></Response>'
    )
    assert stream is not None and stream.url == "wss://h/twilio/media"
    assert stream.parameters == {"token": "t"} and stream.status_callback == "https://h/s"
    assert (say, hangup) == ([], False)
    stream, say, hangup = parse_twiml("<Response><Say>Busy.</Say><Hangup/></Response>")
    assert (stream, say, hangup) == (None, ["Busy."], True)


async def test_messages_are_numbered_like_twilios(nursery, twilio_sim):
    """sequenceNumber counts every message from 1 (`start`); chunk and timestamp count media."""
    received: list[str] = []
    all_in = trio.Event()

    async def server(request):
        ws = await request.accept()
        while len(received) < 7:
            received.append(await ws.get_message())
        all_in.set()

    listener = await nursery.start(trio_websocket.serve_websocket, server, "127.0.0.1", 0, None)
    url = f"ws://127.0.0.1:{listener.port}/twilio/media"
    async with twilio_sim.open_media(url) as conn:
        await conn.send_start(call_sid="CA1", parameters={"token": "x"})
        for _ in range(3):
            await conn.send_media(tone_mulaw(0.02))
        await conn.send_dtmf("1")
        await conn.send_stop(call_sid="CA1")
        with trio.fail_after(5):
            await all_in.wait()
    msgs = [msgspec.json.decode(m) for m in received]
    assert msgs[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert [m["sequenceNumber"] for m in msgs[1:]] == ["1", "2", "3", "4", "5", "6"]
    assert "sequenceNumber" not in msgs[0]
    assert [m["media"]["chunk"] for m in msgs[2:5]] == ["1", "2", "3"]
    assert [m["media"]["timestamp"] for m in msgs[2:5]] == ["0", "20", "40"]
    assert msgs[1]["start"]["customParameters"] == {"token": "x"}
    assert msgs[5]["dtmf"] == {"track": "inbound_track", "digit": "1"}
    assert msgs[6]["event"] == "stop" and msgs[6]["stop"]["callSid"] == "CA1"
    assert msgs[1]["start"]["mediaFormat"] == {
        "encoding": "audio/x-mulaw",
        "sampleRate": 8000,
        "channels": 1,
    }

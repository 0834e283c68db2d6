"""The media stream: the leg's events and outbound messages, tokens, signatures, bad input."""

from __future__ import annotations

import logging

import msgspec
import pytest
import trio
import trio_websocket

from hookline.audio import FRAME_BYTES, mulaw_silence, tone_mulaw
from hookline.providers import AudioIn, DtmfIn, HangUp, MarkReached
from hookline_testkit.twilio_sim import AppMark, AppMedia, new_sid


async def test_whole_stream_through_the_simulator(serve, twilio_sim):
    served = await serve()
    greeting = tone_mulaw(0.3)

    async def agent(leg):
        await leg.play(greeting)
        await leg.mark("greeting")

    served.handler.on_call = agent
    with trio.fail_after(10):
        async with twilio_sim.call(served.voice, from_number="+15550002222") as call:
            mark_at = await call.wait_for_mark("greeting")
            await call.say(tone_mulaw(0.1))
            await call.dtmf("7")
            await served.handler.wait_for(
                lambda: any(isinstance(e, DtmfIn) for e in served.handler.events[leg_id(served)])
            )
        await served.handler.ended[leg_id(served)].wait()
    [leg] = served.handler.legs
    assert leg.info.from_number == "+15550002222"
    assert leg.info.provider_call_id == call.call_sid
    assert "token" not in leg.info.parameters and leg.info.parameters["from"] == "+15550002222"
    assert bytes(call.agent_audio) == greeting
    assert call.first_audio_at is not None and mark_at >= call.first_audio_at
    events = served.handler.events[leg.info.call_id]
    assert MarkReached("greeting") in events
    assert DtmfIn("7") in events
    audio = b"".join(e.audio for e in events if isinstance(e, AudioIn))
    assert tone_mulaw(0.1) in audio  # the caller's words arrived intact, among silence
    assert events[-1] == HangUp(reason="caller")
    assert served.handler.active == 0


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()


def leg_id(served) -> str:
    return served.handler.legs[0].info.call_id


async def test_outbound_audio_in_whole_frames_then_mark(serve, twilio_sim):
    served = await serve()
    sizes = [100, 300, 7, 53, 20000]

    async def agent(leg):
        for n in sizes:
            await leg.play(b"\x01" * n)
        await leg.mark("end")

    served.handler.on_call = agent
    hook = await twilio_sim.post_webhook(served.voice)
    with trio.fail_after(10):
        async with twilio_sim.open_media(hook.stream.url) as conn:
            await conn.send_start(
                call_sid=hook.params["CallSid"], parameters=hook.stream.parameters
            )
            received = []
            while not received or not isinstance(received[-1], AppMark):
                received.append(await conn.receive())
    media = [m.media.payload for m in received if isinstance(m, AppMedia)]
    assert sum(map(len, media)) == sum(sizes)  # nothing lost
    assert all(len(p) % FRAME_BYTES == 0 for p in media[:-1])  # whole frames until the mark
    assert all(len(p) >= FRAME_BYTES for p in media[:-1])
    assert media[0] == b"\x01" * 320  # sent as soon as a whole frame was there
    assert received[-1].mark.name == "end"


async def test_clear_returns_pending_marks_at_once(serve, twilio_sim):
    served = await serve()
    cleared = trio.Event()

    async def agent(leg):
        await leg.play(tone_mulaw(3.0))
        await leg.mark("long")
        await trio.sleep(0.2)
        await leg.clear()
        cleared.set()

    served.handler.on_call = agent
    with trio.fail_after(10):
        async with twilio_sim.call(served.voice) as call:
            await cleared.wait()
            await call.wait_for_mark("long")
            assert call.clears and call.cleared_seconds > 2.0  # the audio was dropped, not played
            assert call.heard_seconds() < 1.0
            await served.handler.wait_for(
                lambda: MarkReached("long") in served.handler.events[leg_id(served)]
            )


async def test_unsigned_upgrade_is_refused(serve, twilio_sim):
    served = await serve()
    hook = await twilio_sim.post_webhook(served.voice)
    for sign in (False, "bm90IGEgc2lnbmF0dXJl"):
        with pytest.raises(trio_websocket.ConnectionRejected) as info:
            async with twilio_sim.open_media(hook.stream.url, sign=sign):
                pass
        assert info.value.status_code == 403
    assert served.handler.refused == {"bad_signature": 2}
    assert served.handler.rejected == []
    assert served.handler.legs == []


async def test_upgrade_signed_for_public_url(serve, twilio_sim):
    served = await serve(public_url="https://agent.example.com")
    hook = await twilio_sim.post_webhook(
        served.voice, sign_url="https://agent.example.com/twilio/voice"
    )
    assert hook.stream.url == "wss://agent.example.com/twilio/media"
    local = served.base.replace("http", "ws") + "/twilio/media"
    async with twilio_sim.open_media(hook.stream.url, connect_url=local) as conn:
        await conn.send_start(call_sid=hook.params["CallSid"], parameters=hook.stream.parameters)
        with trio.fail_after(5):
            await served.handler.started.wait()
        await conn.send_stop(call_sid=hook.params["CallSid"])
    with pytest.raises(trio_websocket.ConnectionRejected):  # signed for where it connected
        async with twilio_sim.open_media(local, connect_url=local):
            pass


async def _start_with(twilio_sim, url, call_sid, parameters):
    """Open a stream, send start; return the close code the server answered with."""
    async with twilio_sim.open_media(url) as conn:
        await conn.send_start(call_sid=call_sid, parameters=parameters)
        with trio.fail_after(5):
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                while True:
                    await conn.receive()
        return info.value.reason.code


async def test_bad_token_closes_the_stream(serve, twilio_sim):
    served = await serve()
    hook = await twilio_sim.post_webhook(served.voice)
    call_sid = hook.params["CallSid"]
    for params in ({}, {**hook.stream.parameters, "token": "guessed"}):
        assert await _start_with(twilio_sim, hook.stream.url, call_sid, params) == 1008
    # A real token, but for another call.
    other = {**hook.stream.parameters}
    assert await _start_with(twilio_sim, hook.stream.url, new_sid("CA"), other) == 1008
    assert served.handler.refused == {"bad_token": 3}
    assert served.handler.rejected == []
    assert served.handler.legs == []


async def test_reused_token_closes_the_stream(serve, twilio_sim):
    served = await serve()
    hook = await twilio_sim.post_webhook(served.voice)
    call_sid = hook.params["CallSid"]
    async with twilio_sim.open_media(hook.stream.url) as conn:
        await conn.send_start(call_sid=call_sid, parameters=hook.stream.parameters)
        with trio.fail_after(5):
            await served.handler.started.wait()
        code = await _start_with(twilio_sim, hook.stream.url, call_sid, hook.stream.parameters)
        assert code == 1008
        await conn.send_stop(call_sid=call_sid)
    assert len(served.handler.legs) == 1
    assert served.handler.refused == {"bad_token": 1}
    assert served.handler.rejected == []


async def test_expired_token_closes_the_stream(serve, twilio_sim):
    served = await serve(token_ttl_s=0.2)
    hook = await twilio_sim.post_webhook(served.voice)
    with trio.fail_after(5):
        await served.handler.wait_for(lambda: served.handler.active == 0)  # slot given back
    code = await _start_with(
        twilio_sim, hook.stream.url, hook.params["CallSid"], hook.stream.parameters
    )
    assert code == 1008
    assert served.handler.legs == []


async def test_no_start_is_closed_after_timeout(serve, twilio_sim):
    served = await serve(start_timeout_s=0.3)
    hook = await twilio_sim.post_webhook(served.voice)
    async with twilio_sim.open_media(hook.stream.url) as conn:
        await conn.send_raw('{"event":"connected","protocol":"Call","version":"1.0.0"}')
        with trio.fail_after(5), pytest.raises(trio_websocket.ConnectionClosed) as info:
            await conn.receive()
    assert info.value.reason.code == 1008
    assert served.handler.legs == []


async def test_bad_input_is_dropped_counted_and_logged_once(serve, twilio_sim, caplog):
    caplog.set_level(logging.WARNING, logger="hookline.telephony.twilio")
    served = await serve(max_message_bytes=4096)
    hook = await twilio_sim.post_webhook(served.voice)
    call_sid = hook.params["CallSid"]
    frame = tone_mulaw(0.02)
    async with twilio_sim.open_media(hook.stream.url) as conn:
        await conn.send_media(frame)  # before start
        await conn.send_start(call_sid=call_sid, parameters=hook.stream.parameters)
        with trio.fail_after(5):
            await served.handler.started.wait()
        for _ in range(2):
            await conn.send_raw("{not json")
            await conn.send_raw(_json({"event": "mystery", "streamSid": conn.stream_sid}))
            await conn.send_media(frame, stream_sid=new_sid("MZ"))
            body = {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": "@@no@@"}
            await conn.send_raw(
                _json({"event": "media", "streamSid": conn.stream_sid, "media": body})
            )
            await conn.send_raw(b"\x00\x01binary")
            await conn.send_raw(_json({"event": "media", "pad": "x" * 5000}))
            await conn.send_raw(_json({"event": "dtmf", "streamSid": conn.stream_sid}))
            await conn.send_media(b"")
        await conn.send_media(frame)
        await conn.send_dtmf("5")
        with trio.fail_after(5):
            await served.handler.wait_for(
                lambda: DtmfIn("5") in served.handler.events[leg_id(served)]
            )
        await conn.send_stop(call_sid=call_sid)
        with trio.fail_after(5):
            await served.handler.ended[leg_id(served)].wait()
    [leg] = served.handler.legs
    assert served.handler.events[leg.info.call_id] == [
        AudioIn(frame),
        DtmfIn("5"),
        HangUp("caller"),
    ]
    assert dict(leg.bad_input) == {
        "before_start": 1,
        "malformed_json": 2,
        "unknown_event": 2,
        "wrong_stream_sid": 2,
        "invalid_base64": 2,
        "binary_frame": 2,
        "oversized_message": 2,
        "invalid_message": 2,
        "empty_media": 2,
    }
    dropped = [r for r in caplog.records if "dropped bad input" in r.getMessage()]
    assert len(dropped) == 9  # one line per kind, not per frame
    # The call id is on the record (the formatter shows it once per line).
    assert all(r.call_id == leg.info.call_id for r in dropped[1:])
    summary = [
        r.getMessage() for r in caplog.records if "bad input during the call" in r.getMessage()
    ]
    assert len(summary) == 1 and "malformed_json=2" in summary[0]


async def test_bad_call_does_not_disturb_another(serve, twilio_sim):
    served = await serve()
    with trio.fail_after(10):
        async with twilio_sim.call(served.voice) as good:
            hook = await twilio_sim.post_webhook(served.voice)
            async with twilio_sim.open_media(hook.stream.url) as conn:
                await conn.send_start(
                    call_sid=hook.params["CallSid"], parameters=hook.stream.parameters
                )
                for _ in range(50):
                    await conn.send_raw("]]]")
                    await conn.send_raw(b"\xff" * 10)
            await good.say(tone_mulaw(0.1))
            await good.dtmf("1")
            await served.handler.wait_for(
                lambda: any(DtmfIn("1") in ev for ev in served.handler.events.values())
            )
    assert len(served.handler.legs) == 2


async def test_socket_vanishing_ends_the_call_with_a_reason(serve, twilio_sim):
    served = await serve()
    hook = await twilio_sim.post_webhook(served.voice)
    async with twilio_sim.open_media(hook.stream.url) as conn:
        await conn.send_start(call_sid=hook.params["CallSid"], parameters=hook.stream.parameters)
        await conn.send_media(mulaw_silence(0.02))
        with trio.fail_after(5):
            await served.handler.started.wait()
        await conn.ws.aclose(code=1001)  # no stop: the socket just goes
    with trio.fail_after(5):
        await served.handler.ended[leg_id(served)].wait()
    events = served.handler.events[leg_id(served)]
    assert events[-1] == HangUp(reason="socket_closed")
    assert served.handler.active == 0


async def test_leg_survives_sends_after_the_socket_closed(serve, twilio_sim):
    served = await serve()
    with trio.fail_after(10):
        async with twilio_sim.call(served.voice) as call:
            await served.handler.started.wait()
        await served.handler.ended[leg_id(served)].wait()
    [leg] = served.handler.legs
    received = len(call.agent_audio)
    # The caller is gone: the engine may still be finishing a sentence. No-ops, no crash.
    await leg.play(b"\xff" * 480)
    await leg.mark("late")
    await leg.clear()
    assert len(call.agent_audio) == received

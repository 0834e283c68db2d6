"""The voice webhook and the status callback: signatures, TwiML, admission, slots."""

from __future__ import annotations

import logging

import httpx
import trio

from hookline_telephony_twilio import TwilioSettings
from hookline_testkit.twilio_sim import TwilioSimulator


async def test_twiml_connects_a_stream_with_parameters(serve, twilio_sim):
    served = await serve()
    hook = await twilio_sim.post_webhook(
        served.voice, from_number="+15551234567", to_number="+15557654321"
    )
    assert hook.status_code == 200
    assert hook.stream is not None
    port = served.base.rsplit(":", 1)[1]
    assert hook.stream.url == f"ws://127.0.0.1:{port}/twilio/media"
    assert hook.stream.status_callback == f"http://127.0.0.1:{port}/twilio/status"
    params = hook.stream.parameters
    assert params["from"] == "+15551234567"
    assert params["to"] == "+15557654321"
    assert len(params["token"]) >= 32
    assert served.handler.active == 1  # the slot is held for the coming stream
    second = await twilio_sim.post_webhook(served.voice)
    assert second.stream is not None and second.stream.parameters["token"] != params["token"]


async def test_unsigned_webhook_is_refused(serve, twilio_sim):
    served = await serve()
    hook = await twilio_sim.post_webhook(served.voice, sign=False)
    assert hook.status_code == 403
    assert hook.stream is None
    assert served.handler.active == 0
    assert served.handler.refused == {"bad_signature": 1}
    assert served.handler.rejected == []  # nothing it claims is recorded


async def test_unsigned_webhooks_are_counted_never_recorded(serve, twilio_sim, caplog):
    caplog.set_level(logging.INFO, logger="hookline.telephony.twilio")
    served = await serve()
    n = 40
    for i in range(n):
        hook = await twilio_sim.post_webhook(
            served.voice, sign=False, from_number=f"+1555000{i:04d}"
        )
        assert hook.status_code == 403
    assert served.handler.refused["bad_signature"] == n
    assert served.handler.rejected == [] and served.handler.admitted == 0
    lines = [r.getMessage() for r in caplog.records if "X-Twilio-Signature" in r.getMessage()]
    assert 1 <= len(lines) <= 2  # rate-limited, not one line per request
    assert not any("+1555000" in line for line in lines)  # and it repeats no claim


async def test_mis_signed_webhook_is_refused(serve, twilio_sim):
    served = await serve()
    wrong_key = TwilioSimulator(auth_token="some-other-token")
    assert (await wrong_key.post_webhook(served.voice)).status_code == 403
    # Right key, but the signature covers another URL.
    other_url = await twilio_sim.post_webhook(
        served.voice, sign_url="https://evil.example/twilio/voice"
    )
    assert other_url.status_code == 403
    # Right key and URL, but a parameter was changed after signing.
    signature = twilio_sim.sign(served.voice, {"CallSid": "CA1"})
    assert (await twilio_sim.post_webhook(served.voice, sign=signature)).status_code == 403
    assert served.handler.admitted == 0


async def test_signature_checked_against_public_url(serve, twilio_sim):
    served = await serve(public_url="https://agent.example.com")
    hook = await twilio_sim.post_webhook(
        served.voice, sign_url="https://agent.example.com/twilio/voice"
    )
    assert hook.status_code == 200
    assert hook.stream is not None
    assert hook.stream.url == "wss://agent.example.com/twilio/media"
    assert hook.stream.status_callback == "https://agent.example.com/twilio/status"
    # Signed for the address it was actually sent to: not what Twilio would sign.
    assert (await twilio_sim.post_webhook(served.voice)).status_code == 403


async def test_forwarded_headers_rebuild_the_url(serve, twilio_sim):
    served = await serve()  # no public_url: a TLS proxy in front says where Twilio called
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "agent.example.com"}
    hook = await twilio_sim.post_webhook(
        served.voice, sign_url="https://agent.example.com/twilio/voice", headers=forwarded
    )
    assert hook.status_code == 200
    assert hook.stream is not None and hook.stream.url == "wss://agent.example.com/twilio/media"


async def test_busy_when_no_slot(serve, twilio_sim):
    served = await serve(capacity=0)
    hook = await twilio_sim.post_webhook(served.voice, from_number="+15550001111")
    assert hook.status_code == 200
    assert hook.stream is None
    assert hook.say == [served.telephony.busy_message]
    assert hook.hangup
    [(info, reason)] = served.handler.rejected
    assert reason == "busy"
    assert info.from_number == "+15550001111"
    assert info.provider_call_id == hook.params["CallSid"]


async def test_slot_released_when_no_stream_comes(serve, twilio_sim):
    served = await serve(token_ttl_s=0.3)
    hook = await twilio_sim.post_webhook(served.voice)
    assert hook.stream is not None
    assert served.handler.active == 1
    with trio.fail_after(5):
        await served.handler.wait_for(lambda: served.handler.active == 0)


async def test_default_reservation_is_short():
    # Twilio opens the stream within a second or two of reading the TwiML; a webhook
    # whose stream never comes must not hold a call slot for long.
    assert TwilioSettings().token_ttl_s <= 10


async def test_stream_error_status_releases_the_slot(serve, twilio_sim):
    served = await serve(token_ttl_s=60)
    hook = await twilio_sim.post_webhook(served.voice)
    other = await twilio_sim.post_webhook(served.voice)
    assert served.handler.active == 2
    # Twilio could not open (or lost) the stream: it says so on the stream's status
    # callback, signed. No stream will come for that call: its slot is free at once.
    fields = {
        "CallSid": hook.params["CallSid"],
        "StreamSid": "MZ" + "0" * 32,
        "StreamEvent": "stream-error",
        "StreamError": "Stream - WebSocket - Handshake Error",
    }
    assert await twilio_sim.post_status(served.status, fields) == 204
    with trio.fail_after(5):
        await served.handler.wait_for(lambda: served.handler.active == 1)
    # An unsigned one releases nothing.
    fields["CallSid"] = other.params["CallSid"]
    assert await twilio_sim.post_status(served.status, fields, sign=False) == 403
    await trio.sleep(0.2)
    assert served.handler.active == 1


async def test_validation_off_is_loud(serve, caplog):
    caplog.set_level(logging.WARNING, logger="hookline.telephony.twilio")
    served = await serve(validate_signatures=False)
    assert sum("validation is OFF" in r.message for r in caplog.records) == 1  # at start-up
    unsigned = TwilioSimulator(auth_token=None)
    for _ in range(2):
        hook = await unsigned.post_webhook(served.voice, sign=False)
        assert hook.status_code == 200 and hook.stream is not None
    assert sum("validation is OFF" in r.message for r in caplog.records) == 3  # and per call


async def test_status_callback_recorded(serve, twilio_sim):
    served = await serve()
    fields = {"CallSid": "CA123", "StreamSid": "MZ1", "StreamEvent": "stream-started"}
    assert await twilio_sim.post_status(served.status, fields) == 204
    assert served.handler.statuses == [("CA123", fields)]
    assert await twilio_sim.post_status(served.status, fields, sign=False) == 403
    assert len(served.handler.statuses) == 1


async def test_wrong_method_and_oversized_body(serve, twilio_sim):
    served = await serve(max_message_bytes=1024)
    async with httpx.AsyncClient() as client:
        assert (await client.get(served.voice)).status_code == 405
        big = await client.post(served.voice, data={"CallSid": "CA1", "Junk": "x" * 5000})
        assert big.status_code == 413
        assert (await client.get(f"{served.base}/nowhere")).status_code == 404
        health = await client.get(f"{served.base}/healthz")
        assert health.status_code == 200
    assert served.handler.admitted == 0

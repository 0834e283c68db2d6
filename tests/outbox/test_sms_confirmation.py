"""A booking texts the caller exactly once, through the outbox and Twilio's Messages API
(the REST fake): with the configured template's text, through a 429, never after the
caller declined or replied STOP; and a confirmation never holds or fails the booking."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import trio

from hookline.server import asgi_app, serve_asgi
from hookline_calendar_google.notify import sms_when
from hookline_telephony_twilio import TwilioSettings, TwilioTelephony
from hookline_testkit.twilio_sim import TwilioRestFake, TwilioSimulator

sys.path.insert(0, str(Path(__file__).parent))

from outbox_helpers import (
    CALLER,
    DISPATCHER,
    SHOP_NUMBER,
    SHOP_PHONE,
    book,
    call_tool,
    shop_runtime,
    tool_ctx,
    wait_settled,
)

TZ = ZoneInfo("America/Chicago")


def expected_text(start_iso: str) -> str:
    when = sms_when(dt.datetime.fromisoformat(start_iso), TZ)
    return (
        f"Riverside Auto Service: your oil change is booked for {when}. "
        f"To change it, call {SHOP_PHONE}. Reply STOP to opt out."
    )


async def test_a_booking_texts_the_caller_once(tmp_path, twilio_rest, twilio_secrets):
    runtime = shop_runtime(tmp_path, twilio_rest, twilio_secrets)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runtime.outbox.run)
        result = await book(runtime)
        # The model retries the same tool call: found, not booked again, not texted again.
        again = await call_tool(
            runtime,
            "book_appointment",
            service="oil change",
            start=result.appointment.start,
            customer_name="Sam Rivera",
            vehicle="2018 Honda Civic",
        )
        assert again.already_booked and again.appointment.appointment_id == (
            result.appointment.appointment_id
        )
        rows = await wait_settled(runtime)
        await trio.sleep(0.5)  # a second delivery would land here
        nursery.cancel_scope.cancel()
    assert [(m.to, m.from_, m.body) for m in twilio_rest.messages] == [
        (CALLER, SHOP_NUMBER, expected_text(result.appointment.start))
    ]
    (row,) = rows
    assert (row.status, row.attempts, row.kind) == ("sent", 1, "booking.booked")
    assert row.key == f"booking:{result.appointment.appointment_id}:booked"
    assert row.sent is not None


async def test_429_then_200_still_one_text(tmp_path, twilio_rest, twilio_secrets):
    twilio_rest.message_faults = [429]
    twilio_rest.retry_after = "0"
    runtime = shop_runtime(tmp_path, twilio_rest, twilio_secrets)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runtime.outbox.run)
        result = await book(runtime)
        (row,) = await wait_settled(runtime)
        await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    refused = [r for r in twilio_rest.requests if r.status_code == 429]
    assert len(refused) == 1
    assert [m.body for m in twilio_rest.messages] == [expected_text(result.appointment.start)]
    assert (row.status, row.attempts) == ("sent", 2)
    assert "429" in row.last_error or row.last_error == ""


async def test_invalid_number_fails_at_once_and_others_still_go(
    tmp_path, twilio_rest, twilio_secrets
):
    twilio_rest.invalid_numbers.add(CALLER)
    runtime = shop_runtime(tmp_path, twilio_rest, twilio_secrets)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runtime.outbox.run)
        await book(runtime)
        await call_tool(
            runtime, "take_message", name="Sam Rivera", reason="brake noise", urgency="urgent"
        )
        rows = {n.kind: n for n in await wait_settled(runtime)}
        nursery.cancel_scope.cancel()
    failed = rows["booking.booked"]
    assert (failed.status, failed.attempts) == ("failed", 1)  # 21211: not retried
    assert "21211" in failed.last_error
    assert rows["message.taken"].status == "sent"
    assert [m.to for m in twilio_rest.messages] == [DISPATCHER]


async def test_declined_consent_sends_nothing(tmp_path, twilio_rest, twilio_secrets):
    runtime = shop_runtime(tmp_path, twilio_rest, twilio_secrets)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runtime.outbox.run)
        result = await book(runtime, sms_ok=False)
        assert result.booked
        await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    assert twilio_rest.messages == []
    assert runtime.outbox.store is not None
    assert runtime.outbox.store.recent_sync() == []


async def _post_sms(port: int, token: str, body: str) -> int:
    url = f"http://127.0.0.1:{port}/twilio/sms"
    form = {"From": CALLER, "To": SHOP_NUMBER, "Body": body, "MessageSid": "SM" + "1" * 32}
    signature = TwilioSimulator(auth_token=token).sign(url, form)
    async with httpx.AsyncClient() as client:
        response = await client.post(url, data=form, headers={"X-Twilio-Signature": signature})
    return response.status_code


async def test_stop_reply_stops_texts_and_start_resumes(
    tmp_path, twilio_rest: TwilioRestFake, twilio_secrets, twilio_auth_token
):
    runtime = shop_runtime(tmp_path, twilio_rest, twilio_secrets)
    telephony = TwilioTelephony(
        TwilioSettings(api_base_url=twilio_rest.url),
        auth_token=twilio_auth_token,
        account_sid=twilio_rest.account_sid,
        limiter=runtime.thread_limiter,
        busy_message="busy",
        outbox=runtime.outbox,
    )
    app = asgi_app(telephony.routes(runtime))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_asgi, app, "127.0.0.1", 0)
        nursery.start_soon(runtime.outbox.run)
        assert await _post_sms(port, "wrong-token", "STOP") == 403  # unsigned: ignored
        assert not await runtime.outbox.opted_out("sms", CALLER)
        assert await _post_sms(port, twilio_auth_token, "Stop") == 200
        assert await runtime.outbox.opted_out("sms", CALLER)
        result = await book(runtime)
        assert result.booked  # the booking stands; only the text is not sent
        await trio.sleep(0.5)
        assert twilio_rest.messages == []
        assert await _post_sms(port, twilio_auth_token, "START") == 200
        await call_tool(
            runtime,
            "cancel_appointment",
            tool_ctx(tool_call_id="tc-2"),
            appointment_id=result.appointment.appointment_id,
        )
        await wait_settled(runtime)
        nursery.cancel_scope.cancel()
    (text,) = twilio_rest.messages  # the cancellation only, after START
    assert text.body.startswith("Riverside Auto Service: your oil change on ")
    assert text.body.endswith(
        " is cancelled. To book again, call +13125550140. Reply STOP to opt out."
    )

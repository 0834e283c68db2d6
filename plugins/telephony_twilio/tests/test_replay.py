"""Replays: a captured signed webhook or stream start must not act as a caller again.

Twilio's signatures carry no timestamp, so a signed request stays valid forever; the
CallSid (unique per call) is what makes each call's webhook answerable only once.
"""

from __future__ import annotations

import logging

import httpx
import pytest
import trio
import trio_websocket

from hookline_telephony_twilio.security import CallSidBook
from hookline_testkit.twilio_sim import SIGNATURE_HEADER, new_sid


async def _replay(hook, url: str, signature: str) -> httpx.Response:
    """The exact captured request again: same form, same X-Twilio-Signature."""
    async with httpx.AsyncClient() as client:
        return await client.post(url, data=hook.params, headers={SIGNATURE_HEADER: signature})


async def test_a_replayed_webhook_gets_no_stream_and_no_slot(serve, twilio_sim, caplog):
    caplog.set_level(logging.INFO, logger="hookline.telephony.twilio")
    served = await serve(capacity=3)
    hook = await twilio_sim.post_webhook(served.voice)
    assert hook.stream is not None
    signature = twilio_sim.sign(served.voice, hook.params)
    for _ in range(5):
        again = await _replay(hook, served.voice, signature)
        assert again.status_code == 403
        assert "<Stream" not in again.text and hook.stream.parameters["token"] not in again.text
    assert served.handler.admitted == 1  # the replays took no slot
    assert served.handler.active == 1
    assert served.handler.refused["replay"] == 5
    assert served.handler.rejected == []  # and wrote nothing a caller could be billed for
    lines = [r.getMessage() for r in caplog.records if "replay" in r.getMessage()]
    assert len(lines) == 1 and hook.params["CallSid"] in lines[0]  # once per CallSid


async def test_replay_after_the_call_ended_is_refused(serve, twilio_sim):
    served = await serve()
    with trio.fail_after(10):
        async with twilio_sim.call(served.voice) as call:
            await served.handler.started.wait()
        await served.handler.wait_for(lambda: served.handler.active == 0)
    replay = await twilio_sim.post_webhook(served.voice, call_sid=call.call_sid)
    assert replay.status_code == 403 and replay.stream is None
    assert served.handler.admitted == 1
    assert served.handler.active == 0


async def test_a_busy_call_replayed_later_gets_no_stream(serve, twilio_sim):
    served = await serve(capacity=0)
    call_sid = new_sid("CA")
    busy = await twilio_sim.post_webhook(served.voice, call_sid=call_sid)
    assert busy.hangup and busy.stream is None
    served.handler.capacity = 5  # lines free up; the old request must still not connect
    replay = await twilio_sim.post_webhook(served.voice, call_sid=call_sid)
    assert replay.status_code == 403 and replay.stream is None
    assert served.handler.admitted == 0
    assert [reason for _, reason in served.handler.rejected] == ["busy"]


async def test_signed_webhook_without_call_sid_is_refused(serve, twilio_sim):
    served = await serve()
    hook = await twilio_sim.post_webhook(served.voice, extra={"CallSid": ""})
    assert hook.status_code == 400 and hook.stream is None
    assert served.handler.admitted == 0


async def test_start_must_carry_the_call_sid_the_token_was_issued_for(serve, twilio_sim):
    served = await serve(token_ttl_s=30)
    hook = await twilio_sim.post_webhook(served.voice)
    params = hook.stream.parameters
    async with twilio_sim.open_media(hook.stream.url) as conn:
        await conn.send_start(call_sid=new_sid("CA"), parameters=params)
        with trio.fail_after(5), pytest.raises(trio_websocket.ConnectionClosed) as info:
            await conn.receive()
    assert info.value.reason.code == 1008
    # The token was presented, so it is spent: the slot comes back now, not at the TTL,
    # and the token cannot be tried again (not even with the right CallSid).
    with trio.fail_after(5):
        await served.handler.wait_for(lambda: served.handler.active == 0)
    async with twilio_sim.open_media(hook.stream.url) as conn:
        await conn.send_start(call_sid=hook.params["CallSid"], parameters=params)
        with trio.fail_after(5), pytest.raises(trio_websocket.ConnectionClosed):
            await conn.receive()
    assert served.handler.legs == []


async def test_call_sid_book_remembers_for_the_window_within_a_bound(autojump_clock):
    book = CallSidBook(window_s=100, max_entries=3)
    assert book.seen_before("CA1") == 0
    assert book.seen_before("CA1") == 1
    await trio.sleep(99)
    assert book.seen_before("CA1") == 2  # still inside the window
    await trio.sleep(2)
    assert book.seen_before("CA1") == 0  # forgotten after the window (Twilio never reuses it)
    for sid in ("CA2", "CA3", "CA4"):
        assert book.seen_before(sid) == 0
    assert len(book) == 3  # bounded: the oldest went first
    assert book.seen_before("CA1") == 0
    assert book.seen_before("CA4") == 1

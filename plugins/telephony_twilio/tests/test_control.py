"""Hang-up and transfer through twilio's REST client, against the loopback REST fake."""

from __future__ import annotations

import email.utils
import logging
import time

import pytest
import trio

from hookline.errors import ProviderAuthError, ProviderProtocolError, ProviderUnavailable
from hookline.providers import HangUp
from hookline_telephony_twilio.control import RETRY_ATTEMPTS, CallControl
from hookline_testkit.twilio_sim import DEFAULT_ACCOUNT_SID, new_sid


async def test_hangup_ends_the_call_through_rest(serve, twilio_sim):
    served = await serve()

    async def agent(leg):
        await leg.hangup()

    served.handler.on_call = agent
    with trio.fail_after(10):
        async with twilio_sim.call(served.voice) as call:
            await call.wait_closed()
    [update] = served.rest.updates(call.call_sid)
    assert update.fields == {"Status": "completed"}
    assert update.status_code == 200
    assert call.ended_by_rest == "completed"
    events = served.handler.events[served.handler.legs[0].info.call_id]
    assert events[-1] == HangUp(reason="hangup")


async def test_hangup_of_an_ended_call_is_done(serve, twilio_rest):
    served = await serve()
    call_sid = new_sid("CA")
    twilio_rest.register(call_sid)
    control = served.telephony.control
    await control.hangup(call_sid)
    await control.hangup(call_sid)  # 400 code 21220 from Twilio: already over, fine
    await control.transfer(call_sid, "+15550009999")  # the caller is gone: nothing to do
    codes = [(r.status_code, r.code) for r in twilio_rest.updates(call_sid)]
    assert codes == [(200, None), (400, 21220), (400, 21220)]


async def test_transfer_redirects_to_dial(serve, twilio_sim):
    served = await serve()

    async def agent(leg):
        await leg.transfer("+15550009999")

    served.handler.on_call = agent
    with trio.fail_after(10):
        async with twilio_sim.call(served.voice) as call:
            await call.wait_closed()
    twiml = served.rest.twiml[call.call_sid]
    dial = twiml[twiml.index("<Dial ") : twiml.index("</Dial>")]
    assert 'timeout="20"' in dial and dial.endswith(">+15550009999")
    assert 'action="http://127.0.0.1:' in dial and '/twilio/transfer-result"' in dial
    assert call.ended_by_rest == "redirected"
    events = served.handler.events[served.handler.legs[0].info.call_id]
    assert events[-1] == HangUp(reason="transfer")


async def test_rest_errors_are_translated(serve, twilio_rest, twilio_auth_token):
    served = await serve()
    control = served.telephony.control
    with pytest.raises(ProviderProtocolError, match="20404"):
        await control.transfer(new_sid("CA"), "+15550009999")  # no such call: cannot transfer
    call_sid = new_sid("CA")
    twilio_rest.register(call_sid)
    twilio_rest.fail_next.extend([503] * 10)
    with pytest.raises(ProviderUnavailable):
        await control.hangup(call_sid)
    assert len(twilio_rest.updates(call_sid)) == RETRY_ATTEMPTS  # bounded
    twilio_rest.fail_next.clear()
    wrong = CallControl(
        account_sid=DEFAULT_ACCOUNT_SID,
        auth_token="not-" + twilio_auth_token,
        base_url=twilio_rest.url,
        timeout=5,
        limiter=trio.CapacityLimiter(1),
    )
    with pytest.raises(ProviderAuthError):
        await wrong.hangup(call_sid)
    dead = CallControl(
        account_sid=DEFAULT_ACCOUNT_SID,
        auth_token=twilio_auth_token,
        base_url="http://127.0.0.1:9",  # nothing listens there
        timeout=5,
        limiter=trio.CapacityLimiter(1),
    )
    with pytest.raises(ProviderUnavailable):
        await dead.hangup(call_sid)
    assert twilio_rest.status[call_sid] == "in-progress"


async def test_hangup_retries_unavailable_and_rate_limited(serve, twilio_rest):
    served = await serve()
    call_sid = new_sid("CA")
    twilio_rest.register(call_sid)
    twilio_rest.fail_next.extend([503, 429, 500])
    with trio.fail_after(30):
        await served.telephony.control.hangup(call_sid)
    codes = [r.status_code for r in twilio_rest.updates(call_sid)]
    assert codes == [503, 429, 500, 200]
    assert twilio_rest.status[call_sid] == "completed"


async def test_retry_after_is_honoured(serve, twilio_rest):
    served = await serve()
    call_sid = new_sid("CA")
    twilio_rest.register(call_sid)
    twilio_rest.fail_next.append(429)
    twilio_rest.retry_after = "1"
    with trio.fail_after(30):
        await served.telephony.control.transfer(call_sid, "+15550009999")
    first, second = twilio_rest.updates(call_sid)
    assert (first.status_code, second.status_code) == (429, 200)
    assert second.t - first.t >= 1.0  # waited as long as Twilio asked, not the short backoff


async def test_retry_after_as_an_http_date_is_honoured(serve, twilio_rest):
    served = await serve()
    call_sid = new_sid("CA")
    twilio_rest.register(call_sid)
    twilio_rest.fail_next.append(503)
    # Dates have whole seconds: 3 s ahead is at least 2 s of waiting, under the 3 s cap.
    twilio_rest.retry_after = email.utils.formatdate(time.time() + 3, usegmt=True)
    with trio.fail_after(30):
        await served.telephony.control.hangup(call_sid)
    first, second = twilio_rest.updates(call_sid)
    assert (first.status_code, second.status_code) == (503, 200)
    assert second.t - first.t >= 1.5  # not the 0.5 s backoff


async def test_hangup_of_a_call_twilio_no_longer_knows_is_done(serve, twilio_rest, caplog):
    caplog.set_level(logging.INFO, logger="hookline.telephony.twilio")
    served = await serve()
    call_sid = new_sid("CA")  # never registered: Twilio answers 404 (20404)
    await served.telephony.control.hangup(call_sid)
    [line] = [r for r in caplog.records if call_sid in r.getMessage()]
    assert "404" in line.getMessage() and line.exc_info is None
    assert len(twilio_rest.updates(call_sid)) == 1  # a gone call is not retried


async def test_failed_rest_hangup_still_ends_the_call(serve, twilio_sim, caplog):
    caplog.set_level(logging.INFO)
    served = await serve()
    returned = trio.Event()

    async def agent(leg):
        served.rest.fail_next.extend([503] * 10)  # Twilio's API is down for good
        await leg.hangup()  # must not raise: the call is ending either way
        returned.set()

    served.handler.on_call = agent
    with trio.fail_after(60):
        async with twilio_sim.call(served.voice) as call:
            await call.closed.wait()  # closing the stream ends a <Connect> call at Twilio
            await returned.wait()
    served.rest.fail_next.clear()
    events = served.handler.events[served.handler.legs[0].info.call_id]
    assert events[-1] == HangUp(reason="hangup")
    assert len(served.rest.updates(call.call_sid)) == RETRY_ATTEMPTS
    assert not any(r.exc_info for r in caplog.records)  # one line, no traceback

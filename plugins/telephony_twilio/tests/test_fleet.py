"""Replicas behind a load balancer: the webhook answered by one process, the stream by
another. Each replica here is its own `TwilioTelephony` on its own loopback server with
its own handler, sharing nothing but configuration (the auth token, the stream key and
the public URL the load balancer answers on), as two processes would."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio_websocket

from hookline.errors import ConfigError
from hookline.providers import CallInfo
from hookline.server import asgi_app, serve_asgi
from hookline_telephony_twilio import TwilioSettings, TwilioTelephony
from hookline_telephony_twilio.security import TokenBook, stream_token_key
from hookline_testkit.twilio_sim import DEFAULT_ACCOUNT_SID, new_sid

from .conftest import BUSY, RecordingHandler, Served
from .test_provider import _runtime

PUBLIC = "https://agent.example.com"  # what the load balancer answers on


@pytest.fixture
async def replica(nursery: trio.Nursery, twilio_rest, twilio_auth_token):
    """`served = await replica(capacity=..., stream_key=..., **settings)`."""

    async def start(capacity: int = 10, stream_key: str | None = None, **settings: Any) -> Served:
        values: dict[str, Any] = {
            "api_base_url": twilio_rest.url,
            "start_timeout_s": 2.0,
            "public_url": PUBLIC,
            **settings,
        }
        telephony = TwilioTelephony(
            TwilioSettings(**values),
            auth_token=twilio_auth_token,
            account_sid=DEFAULT_ACCOUNT_SID,
            limiter=trio.CapacityLimiter(4),
            busy_message=BUSY,
            stream_key=stream_key,
        )
        handler = RecordingHandler(capacity)
        port = await nursery.start(serve_asgi, asgi_app(telephony.routes(handler)), "127.0.0.1", 0)
        return Served(f"http://127.0.0.1:{port}", telephony, handler, twilio_rest)

    return start


async def _webhook(twilio_sim, served: Served):
    """The webhook as Twilio signs it (the public URL), delivered to `served`."""
    hook = await twilio_sim.post_webhook(served.voice, sign_url=f"{PUBLIC}/twilio/voice")
    assert hook.stream is not None, hook.text
    assert hook.stream.url == "wss://agent.example.com/twilio/media"
    return hook


async def _start_on(twilio_sim, served: Served, hook, call_sid: str, parameters: dict):
    """Open the stream (signed for the public URL) on `served` and send `start`.
    Returns the close code, or None while the call runs (then hangs up with `stop`)."""
    connect = served.base.replace("http://", "ws://") + "/twilio/media"
    async with twilio_sim.open_media(hook.stream.url, connect_url=connect) as conn:
        await conn.send_start(call_sid=call_sid, parameters=parameters)
        with trio.fail_after(10):
            try:
                while not served.handler.legs:
                    with trio.move_on_after(0.05):
                        await conn.receive()
            except trio_websocket.ConnectionClosed as closed:
                return closed.reason.code
        await conn.send_stop(call_sid=call_sid)
        return None


async def test_a_stream_is_accepted_by_another_process_than_the_webhook(replica, twilio_sim):
    a = await replica(token_ttl_s=3)
    b = await replica(token_ttl_s=3)
    hook = await _webhook(twilio_sim, a)
    call_sid = hook.params["CallSid"]
    assert a.handler.active == 1  # A reserved a slot for the stream it expects
    assert await _start_on(twilio_sim, b, hook, call_sid, hook.stream.parameters) is None
    [leg] = b.handler.legs
    assert leg.info.provider_call_id == call_sid
    assert (leg.info.from_number, leg.info.to_number) == ("+15550100", "+15550199")
    assert len(leg.info.call_id) == 16  # the id the webhook gave the call, carried along
    assert "token" not in leg.info.parameters
    assert b.handler.admitted == 1  # B admitted the call against its own limit
    assert a.handler.legs == [] and a.handler.refused == b.handler.refused == {}
    with trio.fail_after(10):  # A gets its reservation back when the token expires
        await a.handler.wait_for(lambda: a.handler.active == 0)
        await b.handler.wait_for(lambda: b.handler.active == 0)


async def test_a_token_is_refused_after_its_expiry(replica, twilio_sim):
    a = await replica(token_ttl_s=0.3)
    b = await replica(token_ttl_s=0.3)
    hook = await _webhook(twilio_sim, a)
    await trio.sleep(0.5)
    code = await _start_on(twilio_sim, b, hook, hook.params["CallSid"], hook.stream.parameters)
    assert code == 1008
    assert b.handler.legs == [] and b.handler.admitted == 0
    assert b.handler.refused == {"bad_token": 1}


async def test_a_token_is_refused_for_another_call_sid(replica, twilio_sim):
    a = await replica()
    b = await replica()
    hook = await _webhook(twilio_sim, a)
    code = await _start_on(twilio_sim, b, hook, new_sid("CA"), hook.stream.parameters)
    assert code == 1008
    assert b.handler.legs == [] and b.handler.refused == {"bad_token": 1}


async def test_a_token_is_refused_for_other_stream_parameters(replica, twilio_sim):
    a = await replica()
    b = await replica()
    hook = await _webhook(twilio_sim, a)
    forged = {**hook.stream.parameters, "from": "+15559999999"}
    code = await _start_on(twilio_sim, b, hook, hook.params["CallSid"], forged)
    assert code == 1008
    assert b.handler.legs == []


async def test_a_token_is_refused_by_a_replica_with_another_key(replica, twilio_sim):
    a = await replica(stream_key="k" * 32)
    b = await replica(stream_key="q" * 32)
    hook = await _webhook(twilio_sim, a)
    code = await _start_on(twilio_sim, b, hook, hook.params["CallSid"], hook.stream.parameters)
    assert code == 1008
    assert b.handler.legs == [] and b.handler.refused == {"bad_token": 1}


async def test_a_token_is_spent_in_the_process_that_accepted_it(replica, twilio_sim):
    a = await replica()
    b = await replica()
    hook = await _webhook(twilio_sim, a)
    call_sid = hook.params["CallSid"]
    assert await _start_on(twilio_sim, b, hook, call_sid, hook.stream.parameters) is None
    with trio.fail_after(10):
        await b.handler.wait_for(lambda: b.handler.active == 0)
    b.handler.legs.clear()
    # The same `start` again (a captured one, replayed within the expiry): refused there.
    code = await _start_on(twilio_sim, b, hook, call_sid, hook.stream.parameters)
    assert code == 1008
    assert b.handler.legs == [] and b.handler.refused == {"bad_token": 1}


async def test_a_full_replica_answers_the_stream_busy(replica, twilio_sim, twilio_rest):
    a = await replica()
    b = await replica(capacity=0)
    hook = await _webhook(twilio_sim, a)
    call_sid = hook.params["CallSid"]
    twilio_rest.register(call_sid)  # a call Twilio has in progress
    code = await _start_on(twilio_sim, b, hook, call_sid, hook.stream.parameters)
    assert code == 1000  # closed normally: the call went on to the busy message
    assert b.handler.legs == []
    [(info, reason)] = b.handler.rejected
    assert (reason, info.provider_call_id, info.from_number) == ("busy", call_sid, "+15550100")
    [update] = twilio_rest.updates(call_sid)
    assert BUSY in update.fields["Twiml"] and "<Hangup" in update.fields["Twiml"]


async def test_the_stream_key_comes_from_the_environment(twilio_secrets):
    runtime = _runtime({**twilio_secrets, "HOOKLINE_STREAM_KEY": "s" * 40})
    info = CallInfo(call_id="c" * 16, provider_call_id="CA1", from_number="+1", to_number="+2")
    token, _ = runtime.telephony.tokens.issue(info)
    params = {"from": "+1", "to": "+2"}
    assert TokenBook(10, stream_token_key("s" * 40)).claim(token, "CA1", params) is not None
    auth_derived = stream_token_key(twilio_secrets["TWILIO_AUTH_TOKEN"])
    assert TokenBook(10, auth_derived).claim(token, "CA1", params) is None
    with pytest.raises(ConfigError) as error:
        _runtime({**twilio_secrets, "HOOKLINE_STREAM_KEY": "short"})
    assert error.value.key == "telephony.twilio.stream_token_key_variable"
    assert "HOOKLINE_STREAM_KEY" in str(error.value)


async def test_malformed_and_respelled_tokens_are_refused():
    clock = [1000.0]
    book = TokenBook(10, stream_token_key("k" * 32), clock=lambda: clock[0])
    info = CallInfo(call_id="c" * 16, provider_call_id="CA1", from_number="+1", to_number="+2")
    token, _ = book.issue(info)
    params = {"from": "+1", "to": "+2"}
    other = TokenBook(10, stream_token_key("k" * 32), clock=lambda: clock[0])  # a replica
    for bad in ("", "x", "!!!!", token[:-2], token + "AA", "é" * 8, token[:5] + "*" + token[6:]):
        assert other.claim(bad, "CA1", params) is None, bad
    assert other.claim(token, "CA1", params) is not None
    # The same bytes spelled differently (padding, the standard alphabet) are the same,
    # spent, token.
    assert other.claim(token + "=" * (-len(token) % 4), "CA1", params) is None
    standard = token.replace("-", "+").replace("_", "/")
    assert other.claim(standard, "CA1", params) is None
    clock[0] += 10.001
    fresh = TokenBook(10, stream_token_key("k" * 32), clock=lambda: clock[0])
    assert fresh.claim(token, "CA1", params) is None  # expired

"""Whole calls through the real server: the Twilio simulator on one side of loopback,
the server with the Twilio provider and the scripted STT/LLM/TTS on the other."""

from __future__ import annotations

import signal

import httpx
import trio
import trio.testing

from hookline.audio import tone_mulaw
from hookline.events import AgentSpoke, BargeIn, TelephonyStatus
from hookline.server import serve_app, serve_runtime

GREETING = "Thanks for calling Riverside Auto Service. How can I help?"


def _voice(port: int) -> str:
    return f"http://127.0.0.1:{port}/twilio/voice"


def _session_call_id(runtime) -> str:
    [session] = list(runtime.sessions)
    return session.info.call_id


async def test_greeting_and_an_answer(nursery, stack, twilio_sim):
    s = await stack(["Sure, we can do an oil change."])
    port = await nursery.start(serve_app, s.runtime, "127.0.0.1", 0)
    greeting_audio = s.runtime.phrases[GREETING]
    with trio.fail_after(20):
        async with twilio_sim.call(_voice(port), status_callbacks=True) as call:
            await call.wait_for_audio()
            await call.wait_until_quiet()
            assert bytes(call.agent_audio) == greeting_audio  # heard all of it, nothing else
            s.stt.expect(_session_call_id(s.runtime), "I need an oil change")
            before = len(call.agent_audio)
            spoke_at = trio.current_time()
            await call.say(tone_mulaw(0.6))
            await call.wait_for_audio(after=spoke_at)
            await call.wait_until_quiet()
            answer = bytes(call.agent_audio[before:])
            assert answer == s.tts.audio_for("Sure, we can do an oil change.")
            assert call.marks_echoed  # marks came back as the audio played
        with trio.fail_after(10):
            await s.recorder.wait_for(lambda: s.recorder.ended)
    [record] = s.recorder.ended
    assert record.end_reason == "caller_hangup"
    assert record.provider_call_id == call.call_sid
    assert [(t.role, t.text) for t in record.turns] == [
        ("agent", GREETING),
        ("user", "I need an oil change"),
        ("agent", "Sure, we can do an oil change."),
    ]
    assert all(t.heard_text == t.text for t in record.turns if t.role == "agent"), record.turns
    [status] = s.recorder.of(TelephonyStatus)  # the stream status callback, signed and recorded
    assert status.fields["StreamEvent"] == "stream-started"
    assert status.fields["CallSid"] == call.call_sid
    assert s.runtime.active_calls == 0


async def test_barge_in_clears_twilios_buffer(nursery, stack, twilio_sim):
    long_answer = (
        "We have openings on Monday, Tuesday and Wednesday mornings. "
        "We also have Thursday afternoon and all day Friday, and Saturday until noon."
    )
    s = await stack([long_answer, "Okay, Friday it is."], tts=None)
    port = await nursery.start(serve_app, s.runtime, "127.0.0.1", 0)
    with trio.fail_after(30):
        async with twilio_sim.call(_voice(port)) as call:
            await call.wait_for_audio()
            await call.wait_until_quiet()
            call_id = _session_call_id(s.runtime)
            s.stt.expect(call_id, "When are you open")
            spoke_at = trio.current_time()
            await call.say(tone_mulaw(0.6))
            await call.wait_for_audio(after=spoke_at)
            await trio.sleep(0.5)  # the caller hears the start of the long answer...
            assert call.playing
            s.stt.expect(call_id, "Friday works for me")
            await call.say(tone_mulaw(0.8))  # ...and talks over it
            await s.recorder.wait_for(lambda: s.recorder.of(BargeIn))
            await call.wait_for_clear()
            assert call.cleared_seconds > 0.5  # queued agent audio was dropped by Twilio
            await call.wait_until_quiet()
    with trio.fail_after(10):
        await s.recorder.wait_for(lambda: s.recorder.ended)
    [record] = s.recorder.ended
    interrupted = [t for t in record.turns if t.role == "agent" and t.interrupted]
    assert interrupted and interrupted[0].text == long_answer
    assert interrupted[0].heard_text != long_answer
    spoke = s.recorder.of(AgentSpoke)
    assert any(not e.heard for e in spoke)


async def test_admission_through_the_server(nursery, stack, twilio_sim):
    s = await stack(server={"max_concurrent_calls": 1})
    port = await nursery.start(serve_app, s.runtime, "127.0.0.1", 0)
    with trio.fail_after(20):
        async with twilio_sim.call(_voice(port)) as call:
            await call.wait_for_audio()
            busy = await twilio_sim.post_webhook(_voice(port))
            assert busy.stream is None and busy.hangup
            assert busy.say == [s.runtime.config.agent.busy_message]
        await s.recorder.wait_for(lambda: len(s.recorder.ended) == 2)
    reasons = sorted(r.end_reason for r in s.recorder.ended)
    assert reasons == ["caller_hangup", "rejected:busy"]


async def test_sigterm_drains_an_active_call(nursery, stack, twilio_sim):
    # The grace must outlast the health check and the busy webhook below: with 0.3 s the
    # drain could end (and the listener close) before they arrived on a loaded machine,
    # and the webhook met a reset connection instead of the busy answer.
    s = await stack(server={"drain_timeout_s": 3.0})
    served = trio.Event()

    async def run_server(task_status=trio.TASK_STATUS_IGNORED):
        await serve_runtime(s.runtime, "127.0.0.1", 0, task_status=task_status)
        served.set()

    port = await nursery.start(run_server)
    with trio.fail_after(30):
        async with twilio_sim.call(_voice(port)) as call:
            await call.wait_for_audio()
            await call.wait_until_quiet()
            signal.raise_signal(signal.SIGTERM)
            await s.recorder.wait_for(lambda: s.runtime.draining)
            # Both at once: the drain ends (and the listener closes) as soon as the call
            # has heard its goodbye, so on a loaded machine the second of two requests
            # one after the other could meet a closed listener.
            answers: dict[str, object] = {}

            async def health() -> None:
                async with httpx.AsyncClient() as client:
                    answers["health"] = await client.get(f"http://127.0.0.1:{port}/healthz")

            async def webhook() -> None:
                answers["busy"] = await twilio_sim.post_webhook(_voice(port))

            async with trio.open_nursery() as requests:
                requests.start_soon(health)
                requests.start_soon(webhook)
            assert answers["health"].status_code == 503
            busy = answers["busy"]
            assert busy.stream is None and busy.hangup  # no new calls while draining
            await call.wait_closed()  # goodbye, then hung up through the REST API
        await served.wait()
    goodbye = s.runtime.phrases[s.runtime.config.agent.goodbye]
    assert bytes(call.agent_audio).endswith(goodbye)
    assert call.ended_by_rest == "completed"
    records = {r.provider_call_id: r for r in s.recorder.ended}
    assert records[call.call_sid].end_reason == "shutdown"
    assert s.runtime.active_calls == 0


async def test_a_stream_arriving_while_draining_is_refused_not_greeted(nursery, stack, twilio_sim):
    from hookline_testkit.twilio_sim import SimCall, new_sid

    s = await stack(server={"drain_timeout_s": 600})
    port = await nursery.start(serve_app, s.runtime, "127.0.0.1", 0)
    call_sid = new_sid("CA")
    with trio.fail_after(30):
        # Answered before the drain began (its slot is reserved)...
        hook = await twilio_sim.post_webhook(_voice(port), call_sid=call_sid)
        assert hook.stream is not None
        drained = trio.Event()

        async def drain() -> None:
            await s.runtime.drain(600)
            drained.set()

        nursery.start_soon(drain)
        await trio.testing.wait_all_tasks_blocked()
        assert s.runtime.draining
        # ...its stream opens while the server drains.
        async with twilio_sim.open_media(hook.stream.url) as conn:
            call = SimCall(
                conn,
                account_sid=twilio_sim.account_sid,
                call_sid=call_sid,
                webhook=hook,
                stream_silence=True,
            )
            s.rest.register(call_sid, call.end_by_rest)
            async with trio.open_nursery() as sim:
                await sim.start(call.run)
                await call.wait_closed()
                sim.cancel_scope.cancel()
        await drained.wait()  # the refused call held nothing
    assert len(call.agent_audio) == 0  # not greeted
    assert call.ended_by_rest == "completed"  # hung up, not left in silence
    [record] = s.recorder.ended
    assert record.provider_call_id == call_sid
    assert record.end_reason == "rejected:draining"
    assert s.runtime.active_calls == 0

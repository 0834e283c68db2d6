"""Transfers that land, as whole calls: the real Twilio routes under the real Runtime,
driven by the Twilio simulator, which plays the `<Dial>` and calls its action URL."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import trio

import hookline_messages
import hookline_telephony_twilio
from hookline.analytics import plugin as analytics_plugin
from hookline.audio import tone_mulaw
from hookline.config import Secrets
from hookline.runtime import Runtime
from hookline.server import serve_app
from hookline.testing.harness import make_config, scripted_plugins
from hookline.testing.scripted import Reply, ScriptedLLM, ScriptedSTT, ScriptedTTS
from hookline_messages import MessageStore
from hookline_testkit.twilio_sim import DialScript

DESK = "+15550001111"


async def _runtime(tmp_path: Path, rest_url: str, secrets: dict[str, str], llm: ScriptedLLM):
    config = make_config(
        agent={"transfer_number": DESK},
        providers={"telephony": "twilio", "tools": ["builtin", "messages"]},
        telephony={"twilio": {"api_base_url": rest_url, "transfer_timeout_s": 5}},
        tools={"messages": {"database": str(tmp_path / "messages.duckdb")}},
        analytics={"enabled": True, "database": str(tmp_path / "calls.duckdb")},
    )
    runtime = Runtime(
        config,
        scripted_plugins([hookline_telephony_twilio, hookline_messages, analytics_plugin]),
        secrets=Secrets(secrets),
        providers={"stt": ScriptedSTT(), "llm": llm, "tts": ScriptedTTS()},
    )
    await runtime.start()
    return runtime


def _calls(db: Path) -> list[tuple]:
    con = duckdb.connect(str(db))
    try:
        return con.execute(
            "SELECT id, provider_call_id, end_reason, extra FROM calls ORDER BY started"
        ).fetchall()
    finally:
        con.close()


def _transfer_events(db: Path) -> list[tuple[str, dict]]:
    con = duckdb.connect(str(db))
    try:
        rows = con.execute("SELECT call_id, data FROM events WHERE type = 'TelephonyStatus'")
        out = []
        for call_id, data in rows.fetchall():
            fields = json.loads(data)["fields"]
            if fields.get("event") == "transfer":
                out.append((call_id, fields))
        return out
    finally:
        con.close()


async def _say(call, runtime: Runtime, text: str) -> None:
    [session] = list(runtime.sessions)
    runtime.stt.expect(session.info.call_id, text)  # type: ignore[attr-defined]
    await call.say(tone_mulaw(0.6))


async def test_unanswered_transfer_brings_the_caller_back_to_take_a_message(
    nursery, tmp_path, twilio_rest, twilio_secrets, twilio_sim
):
    llm = ScriptedLLM(
        [
            Reply(tool_calls=[("transfer_call", '{"reason": "wants the service manager"}')]),
            Reply("Sorry, nobody could pick up. Can I take a message?"),
            Reply(
                tool_calls=[("take_message", '{"name": "Dana", "reason": "call about my brakes"}')]
            ),
            Reply("Done, Dana. Someone will call you back."),
        ]
    )
    runtime = await _runtime(tmp_path, twilio_rest.url, twilio_secrets, llm)
    port = await nursery.start(serve_app, runtime, "127.0.0.1", 0)
    twilio_sim.dial = DialScript(status="no-answer", ring_s=0.5)
    with trio.fail_after(90):
        async with twilio_sim.call(f"http://127.0.0.1:{port}/twilio/voice") as call:
            await call.wait_for_audio()
            await call.wait_until_quiet()
            await _say(call, runtime, "Can I talk to the service manager?")
            back = await call.wait_for_return()
            assert call.dial is not None and call.dial.dial.number == DESK
            assert call.dial.dial.timeout_s == 5
            assert back.call_sid == call.call_sid  # the same phone call, streamed back
            await back.wait_for_audio()  # the agent speaks first: offers a message
            await back.wait_until_quiet()
            said = trio.current_time()
            await _say(back, runtime, "Yes, I'm Dana, it's about my brakes")
            await back.wait_for_audio(after=said)  # "Done, Dana..." after take_message
            await back.wait_until_quiet()
        await runtime.drain(grace_s=20)
    runtime.stop()
    # The returning call's model saw the whole conversation and the outcome.
    resumed = llm.requests[1]
    assert any(m.role == "user" and "service manager" in (m.content or "") for m in resumed)
    note = resumed[-1]
    assert note.role == "system" and "no answer" in note.content and "take_message" in note.content
    assert [m.role for m in resumed].count("system") == 2  # the prompt, then the note
    stored = await MessageStore(tmp_path / "messages.duckdb").pending()
    assert [(m.name, m.reason, m.callback_number) for m in stored] == [
        ("Dana", "call about my brakes", "+15550100")
    ]
    first, second = _calls(tmp_path / "calls.duckdb")
    assert first[1] == second[1] == call.call_sid
    assert first[2] == "transferred"
    assert json.loads(second[3]) == {"resumed_from": first[0], "transfer_outcome": "no-answer"}
    [(event_call, fields)] = _transfer_events(tmp_path / "calls.duckdb")
    assert event_call == first[0]
    assert fields["transfer_outcome"] == "no-answer" and fields["DialCallStatus"] == "no-answer"


async def test_answered_transfer_ends_the_call_transferred(
    nursery, tmp_path, twilio_rest, twilio_secrets, twilio_sim
):
    llm = ScriptedLLM([Reply(tool_calls=[("transfer_call", '{"reason": "billing question"}')])])
    runtime = await _runtime(tmp_path, twilio_rest.url, twilio_secrets, llm)
    port = await nursery.start(serve_app, runtime, "127.0.0.1", 0)
    twilio_sim.dial = DialScript(status="completed", ring_s=0.2, talk_s=1.0)
    with trio.fail_after(60):
        async with twilio_sim.call(f"http://127.0.0.1:{port}/twilio/voice") as call:
            await call.wait_for_audio()
            await call.wait_until_quiet()
            await _say(call, runtime, "I need a person for billing")
            outcome = await call.wait_for_dial()
        await runtime.drain(grace_s=20)
    runtime.stop()
    assert outcome.status_code == 200 and outcome.hangup and outcome.stream is None
    assert call.returned is None
    assert twilio_rest.status[call.call_sid] == "completed"
    assert len(runtime.handoffs) == 0  # a person has the caller: nothing waits for a return
    [(call_id, _, reason, _)] = _calls(tmp_path / "calls.duckdb")
    assert reason == "transferred"
    [(event_call, fields)] = _transfer_events(tmp_path / "calls.duckdb")
    assert event_call == call_id and fields["transfer_outcome"] == "answered"


async def test_a_replayed_transfer_result_is_refused(
    nursery, tmp_path, twilio_rest, twilio_secrets, twilio_sim
):
    llm = ScriptedLLM([Reply(tool_calls=[("transfer_call", '{"reason": "a person"}')])])
    runtime = await _runtime(tmp_path, twilio_rest.url, twilio_secrets, llm)
    port = await nursery.start(serve_app, runtime, "127.0.0.1", 0)
    twilio_sim.dial = DialScript(status="busy", ring_s=0.2)
    with trio.fail_after(60):
        async with twilio_sim.call(f"http://127.0.0.1:{port}/twilio/voice") as call:
            await call.wait_for_audio()
            await call.wait_until_quiet()
            await _say(call, runtime, "Get me a person")
            back = await call.wait_for_return()
            await back.wait_for_audio()
            assert call.dial is not None
            # The same signed callback again: its transfer was answered once already.
            code = await twilio_sim.post_status(call.dial.dial.action, call.dial.fields)
            assert code == 403
        await runtime.drain(grace_s=20)
    runtime.stop()
    assert runtime.refused["replay"] == 1
    assert runtime.handoffs.get(call.call_sid) is None

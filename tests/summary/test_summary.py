"""The post-call summary (issue 13 #5): one LLM request after the call, in the runtime's
background workers, stored in `call_summaries`: written for a demo-style call against the
OpenAI fake, skipped with the reason when the LLM fails or stalls, or when the caller
said nothing; and the `call.completed` payload built from the record and the summary.

Real time (the fake OpenAI's sockets are real); the scripted caller is sped up.
"""

from __future__ import annotations

import duckdb
import msgspec
import pytest
import trio

import hookline_llm_openai
from hookline.analytics import plugin as analytics_plugin
from hookline.config import Secrets
from hookline.hookspecs import hookimpl
from hookline.outbox import webhook as webhook_channel
from hookline.runtime import Runtime
from hookline.summary import CallCompleted, call_completed_payload, parse_summary
from hookline.testing.harness import ScriptedTelephony, make_config, run_call, scripted_plugins
from hookline.testing.scripted import (
    HangUpStep,
    Say,
    ScriptedLeg,
    ScriptedSTT,
    ScriptedTTS,
    WaitForAgent,
    call_info,
)
from hookline.tools import ToolContext, ToolSet, tool
from hookline_testkit.fake_openai import FakeOpenAI, call, server_error, stall, text, tool_calls

WORD_S = 0.08
SUMMARY_JSON = """```json
{"summary": "Dana booked an oil change for her 2018 Honda Civic on Tuesday at 9.",
 "reason_for_calling": "oil change", "outcome": "appointment booked",
 "vehicle": "2018 Honda Civic", "follow_up_needed": false, "follow_up": null,
 "sentiment": "positive"}
```"""


class Slot(msgspec.Struct):
    service: str
    start: str
    customer_name: str


@tool(side_effect=True)
async def book_appointment(params: Slot, ctx: ToolContext) -> dict:
    """Book a service appointment."""
    return {"appointment_id": "apt-1", "start": params.start, "code": "123456"}


class ShopTools:
    __name__ = "shop_tools"

    @hookimpl
    def hookline_toolsets(self):
        return [ToolSet(name="shop", create=lambda settings, ctx: [book_appointment])]


async def build(
    fake: FakeOpenAI, db, notifications: dict | None = None, **summary: object
) -> tuple[Runtime, ScriptedSTT]:
    config = make_config(
        notifications=notifications or {},
        agent={"name": "Riverside Auto Service", "greeting": "Riverside Auto, hi."},
        providers={"llm": "openai", "tools": ["builtin", "shop"]},
        llm={"openai": {"base_url": fake.url, "max_retry_wait_s": 0.5}},
        analytics={"enabled": True, "database": str(db)},
        summary=summary,
    )
    stt = ScriptedSTT(word_s=WORD_S, endpointing_s=0.15, utterance_end_s=0.5)
    runtime = Runtime(
        config,
        scripted_plugins([hookline_llm_openai, ShopTools(), analytics_plugin, webhook_channel]),
        secrets=Secrets({"OPENAI_API_KEY": fake.api_key, "HOOKLINE_WEBHOOK_SECRET": "s" * 32}),
        providers={
            "telephony": ScriptedTelephony(),
            "stt": stt,
            "tts": ScriptedTTS(ttfb_s=0.02, chars_per_s=400),
        },
    )
    await runtime.start()
    return runtime, stt


async def call_then_summarize(runtime: Runtime, stt: ScriptedSTT, script: list):
    """Run one call with the background workers up, then let the summary finish."""
    payloads: list[CallCompleted] = []

    async def on_done(payload: CallCompleted) -> None:
        payloads.append(payload)

    assert runtime.summaries is not None
    runtime.summaries.on_done = on_done  # type: ignore[method-assign]  # the outbox's seam
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.run_background)
            record = await run_call(runtime, ScriptedLeg(call_info(), script, stt, word_s=WORD_S))
            await runtime.finish_background()
    finally:
        await runtime.llm.aclose()
        await trio.to_thread.run_sync(runtime.stop)
    return record, payloads


def summaries(db) -> list[tuple]:
    con = duckdb.connect(str(db))
    try:
        return con.execute(
            "SELECT call_id, status, reason, summary, reason_for_calling, outcome, vehicle, "
            "follow_up_needed, sentiment, model FROM call_summaries"
        ).fetchall()
    finally:
        con.close()


BOOKING_CALL = [
    WaitForAgent(),
    Say("I'd like an oil change for my 2018 Civic on Tuesday at nine, name is Dana"),
    WaitForAgent(timeout=30),
    Say("thanks bye"),
    WaitForAgent(timeout=30),
    HangUpStep(),
]


async def test_a_demo_call_gets_its_summary_written(openai_fake: FakeOpenAI, tmp_path) -> None:
    db = tmp_path / "calls.duckdb"
    args = '{"service": "oil change", "start": "Tuesday 9:00", "customer_name": "Dana"}'
    openai_fake.script(
        tool_calls(call("book_appointment", args)),
        text("You're booked for Tuesday at nine. Anything else?"),
        text("Thanks for calling, goodbye!"),
        text(SUMMARY_JSON),  # the summary request, after the call
    )
    runtime, stt = await build(openai_fake, db)
    record, payloads = await call_then_summarize(runtime, stt, BOOKING_CALL)

    assert record.end_reason == "caller_hangup"
    assert summaries(db) == [
        (
            record.call_id, "done", None,
            "Dana booked an oil change for her 2018 Honda Civic on Tuesday at 9.",
            "oil change", "appointment booked", "2018 Honda Civic", False, "positive", "gpt-4o",
        )
    ]  # fmt: skip
    # One request after the call, with no tools, carrying the transcript.
    summary_request = openai_fake.requests[-1].chat
    assert summary_request is not None and not summary_request.tools
    assert "oil change for my 2018 Civic" in (summary_request.messages[-1].content or "")
    # The call.completed payload: transcript, summary, bookings from the tool calls.
    (payload,) = payloads
    assert payload.call_id == record.call_id and payload.summary_status == "done"
    assert payload.summary is not None and payload.summary.vehicle == "2018 Honda Civic"
    assert [b.action for b in payload.bookings] == ["booked"]
    assert payload.bookings[0].arguments["customer_name"] == "Dana"
    assert payload.transcript[0].role == "agent" and payload.transcript[1].role == "user"
    assert msgspec.json.decode(msgspec.json.encode(payload), type=CallCompleted) == payload


async def test_a_failing_llm_skips_the_summary_with_the_reason(
    openai_fake: FakeOpenAI, tmp_path
) -> None:
    db = tmp_path / "calls.duckdb"
    openai_fake.script(
        text("We open at eight."),
        text("Goodbye!"),
        *[server_error(500)] * 6,  # the summary request and every retry
    )
    runtime, stt = await build(openai_fake, db)
    script = [WaitForAgent(), Say("when do you open"), WaitForAgent(timeout=30)]
    script += [Say("ok bye"), WaitForAgent(timeout=30), HangUpStep()]
    record, payloads = await call_then_summarize(runtime, stt, script)

    ((call_id, status, reason, summary, *_),) = summaries(db)
    assert (call_id, status, summary) == (record.call_id, "skipped", None)
    assert reason.startswith("the LLM failed") and "500" in reason
    assert payloads[0].summary_status == "skipped"
    assert payloads[0].summary_skipped_reason == reason


async def test_a_stalled_llm_is_cut_at_the_timeout(openai_fake: FakeOpenAI, tmp_path) -> None:
    db = tmp_path / "calls.duckdb"
    openai_fake.script(text("We open at eight."), text("Goodbye!"), stall())
    runtime, stt = await build(openai_fake, db, timeout_s=1.5)
    script = [WaitForAgent(), Say("when do you open"), WaitForAgent(timeout=30)]
    script += [Say("ok bye"), WaitForAgent(timeout=30), HangUpStep()]
    await call_then_summarize(runtime, stt, script)

    ((_, status, reason, *_),) = summaries(db)
    assert status == "skipped"
    # The provider's own first-token timeout or ours, whichever came first: never hung.
    assert "1.5 s" in reason or "Timeout" in reason, reason


async def test_a_call_without_caller_turns_is_skipped_without_a_request(
    openai_fake: FakeOpenAI, tmp_path
) -> None:
    db = tmp_path / "calls.duckdb"
    runtime, stt = await build(openai_fake, db)
    record, _ = await call_then_summarize(runtime, stt, [WaitForAgent(), HangUpStep()])

    assert [r[:3] for r in summaries(db)] == [(record.call_id, "skipped", "no caller turns")]
    assert openai_fake.requests == []


async def test_summaries_can_be_turned_off(openai_fake: FakeOpenAI, tmp_path) -> None:
    db = tmp_path / "calls.duckdb"
    openai_fake.script(text("We open at eight."), text("Bye!"))
    runtime, stt = await build(openai_fake, db, enabled=False)
    assert runtime.summaries is None
    script = [WaitForAgent(), Say("when do you open"), WaitForAgent(timeout=30), HangUpStep()]
    async with trio.open_nursery() as nursery:
        await nursery.start(runtime.run_background)
        await run_call(runtime, ScriptedLeg(call_info(), script, stt, word_s=WORD_S))
        await runtime.finish_background()
    await runtime.llm.aclose()
    await trio.to_thread.run_sync(runtime.stop)
    assert summaries(db) == []
    assert len(openai_fake.requests) == 1  # the call's own answer, nothing after


@pytest.mark.parametrize(
    "answer",
    [
        '{"summary": "Asked about hours.", "sentiment": "neutral"}',
        '```json\n{"summary": "Asked about hours.", "sentiment": "neutral"}\n```',
        'Here it is:\n```\n{"summary": "Asked about hours.", "sentiment": "neutral"}\n```',
    ],
)
def test_answers_in_code_fences_are_read(answer: str) -> None:
    fields = parse_summary(answer)
    assert (fields.summary, fields.sentiment, fields.follow_up_needed) == (
        "Asked about hours.", "neutral", False,
    )  # fmt: skip


@pytest.mark.parametrize(
    "answer",
    ["Sure! The caller asked about hours.", '{"summary": ""}', '{"summary": "x", '
     '"sentiment": "furious"}', '{"summary": "x", "follow_up_needed": "maybe"}'],
)  # fmt: skip
def test_answers_that_are_not_the_json_asked_for_are_refused(answer: str) -> None:
    with pytest.raises(ValueError):
        parse_summary(answer)


def test_the_payload_of_a_call_without_summary_still_has_its_transcript() -> None:
    from hookline.events import CallRecord, ToolCallRecord, TurnRecord

    record = CallRecord(
        call_id="c1", provider_call_id="CA1", from_number="+15550100", to_number="+15550199",
        started=100.0, ended=160.5, end_reason="caller_hangup", providers={},
        turns=[
            TurnRecord(index=0, role="agent", text="Hi.", started=100, ended=101),
            TurnRecord(
                index=1, role="user", text="My car broke down on I-90", started=102, ended=104,
                tool_calls=[
                    ToolCallRecord(
                        call_id="t1", tool="request_tow", arguments='{"location": "I-90"}',
                        ok=True, result='{"ref": "TOW-1"}', error=None, latency_ms=5.0,
                    ),
                    ToolCallRecord(
                        call_id="t2", tool="book_appointment", arguments="{}", ok=False,
                        result="", error="no slot", latency_ms=5.0,
                    ),
                ],
            ),
        ],
    )  # fmt: skip
    payload = call_completed_payload(record, None)
    assert payload.duration_s == 60.5 and payload.summary is None
    assert [t.text for t in payload.transcript] == ["Hi.", "My car broke down on I-90"]
    assert [(n.kind, n.arguments) for n in payload.notifications] == [
        ("tow_request", {"location": "I-90"})
    ]
    assert payload.bookings == []  # a failed booking is not a booking


async def test_the_call_completed_payload_is_queued_on_the_signed_webhook(
    openai_fake: FakeOpenAI, tmp_path
) -> None:
    # With `[notifications.webhook]` configured, each summarized call leaves through the
    # durable outbox as one `call.completed` notification (nothing is sent in this test:
    # the sender is not running; the row is what survives a crash).
    db = tmp_path / "calls.duckdb"
    args = '{"service": "oil change", "start": "Tuesday 9:00", "customer_name": "Dana"}'
    openai_fake.script(
        tool_calls(call("book_appointment", args)),
        text("You're booked for Tuesday at nine."),
        text("Bye!"),
        text(SUMMARY_JSON),
    )
    webhook = {"webhook": {"url": "https://shop.example.com/hooks/hookline"}}
    runtime, stt = await build(openai_fake, db, notifications=webhook)
    assert runtime.summaries is not None
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.run_background)
            record = await run_call(
                runtime, ScriptedLeg(call_info(), BOOKING_CALL, stt, word_s=WORD_S)
            )
            await runtime.finish_background()
    finally:
        await runtime.llm.aclose()
        await trio.to_thread.run_sync(runtime.stop)
    assert runtime.outbox.store is not None
    (queued,) = runtime.outbox.store.recent_sync(10)
    assert (queued.channel, queued.kind, queued.call_id) == (
        "webhook", "call.completed", record.call_id,
    )  # fmt: skip
    payload = msgspec.convert(queued.payload, CallCompleted)
    assert payload.summary is not None and "oil change" in payload.summary.summary

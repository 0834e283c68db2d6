"""Real calls through the call engine (scripted providers, trio's MockClock) into DuckDB:
what the engine records is what the analyst finds."""

from __future__ import annotations

import msgspec
import pytest
import trio

from hookline import ProviderAuthError, ToolContext, ToolSet, tool
from hookline.analytics import plugin as analytics_plugin
from hookline.analytics.plugin import sink_for
from hookline.events import CallRecord
from hookline.hookspecs import hookimpl
from hookline.testing.harness import make_config, run_call, scripted_runtime
from hookline.testing.scripted import (
    HangUpStep,
    Pause,
    Reply,
    Say,
    ScriptedLeg,
    ScriptedLLM,
    ScriptedSTT,
    ScriptedTTS,
    WaitForAgent,
    call_info,
)


class Slot(msgspec.Struct):
    day: str


@tool
async def check_availability(params: Slot, ctx: ToolContext) -> dict:
    """Free service slots on a day."""
    await trio.sleep(0.4)
    return {"day": params.day, "slots": ["09:00", "10:30"]}


class ShopTools:
    @hookimpl
    def hookline_toolsets(self):
        return [ToolSet(name="shop", create=lambda settings, rt: [check_availability])]


def config(db, **analytics):
    return make_config(
        providers={"tools": ["builtin", "shop"]},
        analytics={"enabled": True, "database": str(db), **analytics},
    )


async def one_call(db, script, *, stt=None, llm=None, tts=None) -> CallRecord:
    stt = stt or ScriptedSTT()
    runtime = await scripted_runtime(
        config(db), stt=stt, llm=llm, tts=tts, plugins=[analytics_plugin, ShopTools()]
    )
    assert sink_for(runtime) is not None
    record = await run_call(runtime, ScriptedLeg(call_info(), script, stt))
    runtime.stop()
    return record


def rows_match_record(query, record: CallRecord) -> None:
    cid = record.call_id
    ((reason, turns, interrupted, prompt, duration, cost),) = query(
        "SELECT end_reason, turns, interrupted_turns, llm_prompt_tokens, duration_s, cost_usd "
        "FROM calls WHERE id = ?",
        [cid],
    )
    assert reason == record.end_reason
    assert turns == len(record.turns)
    assert interrupted == sum(t.interrupted for t in record.turns if t.role == "agent")
    assert prompt == record.usage.get("llm_prompt_tokens")
    assert duration == pytest.approx(record.duration)
    assert cost is not None and cost >= 0
    stored = query(
        "SELECT turn, role, text, heard_text, interrupted FROM turns WHERE call_id = ? "
        "ORDER BY turn",
        [cid],
    )
    assert stored == [
        (t.index, t.role, t.text, t.heard_text if t.role == "agent" else None, t.interrupted)
        for t in record.turns
    ]
    lat = query("SELECT turn, metric, ms FROM latencies WHERE call_id = ?", [cid])
    assert sorted(lat) == sorted(
        (t.index, m, v) for t in record.turns for m, v in t.metrics.items()
    )


async def test_a_call_that_ends_normally_with_a_tool(autojump_clock, db, query):
    stt = ScriptedSTT()
    llm = ScriptedLLM(
        [Reply(tool_calls=[("check_availability", '{"day": "friday"}')]), "Friday at nine works."]
    )
    script = [WaitForAgent(), Say("Anything on Friday"), WaitForAgent(timeout=60), HangUpStep()]
    record = await one_call(db, script, stt=stt, llm=llm)
    assert record.end_reason == "caller_hangup"
    rows_match_record(query, record)
    assert query("SELECT tool, arguments, ok, latency_ms >= 400 FROM tool_calls") == [
        ("check_availability", '{"day": "friday"}', True, True)
    ]
    metrics = {m for (m,) in query("SELECT DISTINCT metric FROM latencies")}
    assert {"voice_to_voice", "llm_first_token", "tts_first_byte", "runtime_overhead"} <= metrics
    types = {t for (t,) in query("SELECT DISTINCT type FROM events")}
    assert {"UserTurnEnded", "ToolCallStarted", "ToolCallFinished", "TurnMetrics"} <= types
    assert query("SELECT outcome FROM call_outcomes") == [("caller_hangup",)]


async def test_a_barge_in_heavy_call(autojump_clock, db, query):
    stt = ScriptedSTT()
    long = (
        "We have openings on Monday. We also have Tuesday at nine. "
        "Wednesday is wide open. Thursday afternoon works too."
    )
    llm = ScriptedLLM([long, long, "Sure, Tuesday at nine it is."])
    script = [WaitForAgent(), Say("When can you fit me in"), Pause(4.5)]
    script += [Say("No wait what about next week"), Pause(4.5)]
    script += [Say("Tuesday at nine please"), WaitForAgent(), HangUpStep()]
    record = await one_call(db, script, stt=stt, llm=llm)
    interrupted = [t for t in record.turns if t.interrupted]
    assert len(interrupted) >= 2
    rows_match_record(query, record)
    assert query("SELECT count(*) FROM events WHERE type = 'BargeIn'") == [(len(interrupted),)]
    rows = query("SELECT text, heard_text FROM turns WHERE interrupted")
    assert all(text.startswith(heard) and text != heard for text, heard in rows)
    assert query("SELECT interrupted_turns, agent_turns FROM interruptions")[0][0] == len(
        interrupted
    )


async def test_a_call_ended_by_a_provider_failure(autojump_clock, db, query):
    stt = ScriptedSTT()
    llm = ScriptedLLM([Reply(error=ProviderAuthError("bad key", provider="llm/scripted"))])
    record = await one_call(db, [WaitForAgent(), Say("Hi there"), Pause(20)], stt=stt, llm=llm)
    assert record.end_reason == "provider_failed:llm/scripted"
    rows_match_record(query, record)
    assert query("SELECT data ->> 'provider' FROM events WHERE type = 'ProviderFailed'") == [
        ("llm/scripted",)
    ]
    assert query("SELECT day, failed FROM daily_calls")[0][1] == 1


async def test_rejected_calls_and_privacy_through_the_runtime(
    autojump_clock, db, query, monkeypatch
):
    monkeypatch.setenv("HOOKLINE_HASH_SALT", "s3cret")
    runtime = await scripted_runtime(
        config(db, caller_numbers="hashed", transcripts=False),
        tts=ScriptedTTS(),
        plugins=[analytics_plugin, ShopTools()],
    )
    stt = runtime.stt
    runtime.record_rejected(call_info(call_id="busy"), "busy")
    script = [WaitForAgent(), Say("Book me for Friday"), WaitForAgent(), HangUpStep()]
    record = await run_call(runtime, ScriptedLeg(call_info(), script, stt))
    runtime.stop()
    assert query("SELECT id, end_reason FROM calls ORDER BY id = 'busy' DESC") == [
        ("busy", "rejected:busy"),
        (record.call_id, "caller_hangup"),
    ]
    numbers = {n for (n,) in query("SELECT from_number FROM calls")}
    assert len(numbers) == 1 and len(numbers.pop()) == 64  # same caller, one hash
    assert query("SELECT count(text) FROM turns") == [(0,)]
    assert not query("SELECT 1 FROM events WHERE contains(CAST(data AS VARCHAR), 'Friday')")

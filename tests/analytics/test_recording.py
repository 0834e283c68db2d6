"""What the analytics plugin writes for calls that end normally, by barge-in, by provider
failure, by rejection and by the process dying; privacy settings; robustness."""

from __future__ import annotations

import hashlib
import hmac
import logging
import sys
import textwrap
import time

import msgspec
import pytest
import trio

from hookline.analytics.plugin import detach, sink_for
from hookline.config import AnalyticsConfig, PricesConfig
from hookline.errors import MissingSecret
from hookline.events import (
    BargeIn,
    CallEvent,
    CallRecord,
    TelephonyStatus,
    ToolCallFinished,
    ToolCallStarted,
    TurnMetrics,
    TurnRecord,
    UsageReported,
    UserTurnEnded,
)
from hookline.providers import CallInfo
from hookline_testkit.simulate import observer_runtime, simulate_calls


async def started(db, **analytics):
    runtime = observer_runtime(db, analytics=AnalyticsConfig(**analytics) if analytics else None)
    await runtime.start()
    return runtime


async def stop(runtime) -> None:
    await trio.to_thread.run_sync(runtime.stop)


async def test_calls_that_end_normally_have_all_their_rows(db, query):
    runtime = await started(db)
    records = simulate_calls(runtime, 6, kinds=("normal", "tools"))
    await stop(runtime)

    rows = query(
        "SELECT id, end_reason, turns, interrupted_turns, duration_s FROM calls ORDER BY id"
    )
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (rec.call_id, "caller_hangup", len(rec.turns))
        for rec in sorted(records, key=lambda r: r.call_id)
    ]
    for rec in records:
        turns = query(
            "SELECT turn, role, text, heard_text, interrupted FROM turns "
            "WHERE call_id = ? ORDER BY turn",
            [rec.call_id],
        )
        assert turns == [
            (t.index, t.role, t.text, t.heard_text if t.role == "agent" else None, t.interrupted)
            for t in rec.turns
        ]
        lat = query("SELECT turn, metric, ms FROM latencies WHERE call_id = ?", [rec.call_id])
        expected = {(t.index, m, v) for t in rec.turns for m, v in t.metrics.items()}
        assert set(lat) == expected and len(lat) == len(expected)
        tools = query(
            "SELECT tool_call_id, tool, arguments, ok, error, latency_ms FROM tool_calls "
            "WHERE call_id = ?",
            [rec.call_id],
        )
        assert sorted(tools) == sorted(
            (c.call_id, c.tool, c.arguments, c.ok, c.error, c.latency_ms)
            for t in rec.turns
            for c in t.tool_calls
        )
    # The "tools" calls all used a tool; there are raw events for every call, in order.
    assert query("SELECT count(DISTINCT call_id) FROM tool_calls")[0][0] >= 3
    first = records[0].call_id
    types = [r[0] for r in query("SELECT type FROM events WHERE call_id = ? ORDER BY seq", [first])]
    assert types[:3] == ["AgentSpoke", "UserSpeechStarted", "UserTurnEnded"]  # greeting first
    agent_turns = sum(t.role == "agent" for t in records[0].turns)
    assert types.count("AgentSpoke") == agent_turns
    assert types.count("TurnMetrics") == agent_turns - 1  # the cached greeting has none


async def test_cost_estimate_follows_the_prices(db, query):
    prices = PricesConfig(
        llm_input_per_million=2.0,
        llm_cached_input_per_million=1.0,
        llm_output_per_million=8.0,
        tts_per_thousand_chars=0.05,
        stt_per_minute=0.01,
        telephony_per_minute=0.02,
    )
    runtime = observer_runtime(db, prices=prices)
    await runtime.start()
    info = CallInfo(call_id="cost1", provider_call_id="CAcost1", from_number="+15550001111")
    runtime.call_started(info, 1_700_000_000.0)
    usage = {
        "llm_prompt_tokens": 10_000, "llm_cached_tokens": 4_000, "llm_completion_tokens": 1_000,
        "tts_characters": 2_000, "stt_seconds": 120.0, "telephony_seconds": 180.0,
    }  # fmt: skip
    runtime.call_ended(info, CallRecord(
        call_id="cost1", provider_call_id="CAcost1", from_number="+15550001111",
        to_number="+15559870000", started=1_700_000_000.0, ended=1_700_000_170.0,
        end_reason="agent_hangup", providers={"llm": "sim"}, usage=usage,
    ))  # fmt: skip
    await stop(runtime)
    ((total, llm, tts, stt, tel, cached),) = query(
        "SELECT cost_usd, cost_llm_usd, cost_tts_usd, cost_stt_usd, cost_telephony_usd, "
        "llm_cached_tokens FROM calls WHERE id = 'cost1'"
    )
    # 6000 fresh x $2/M + 4000 cached x $1/M + 1000 out x $8/M; 2k chars; 2 min; 3 min.
    assert llm == pytest.approx(0.012 + 0.004 + 0.008)
    assert tts == pytest.approx(0.10)
    assert stt == pytest.approx(0.02)
    assert tel == pytest.approx(0.06)
    assert total == pytest.approx(0.024 + 0.10 + 0.02 + 0.06)
    assert cached == 4000


async def test_barge_in_heavy_calls(db, query):
    runtime = await started(db)
    records = simulate_calls(runtime, 8, kinds=("barge_in",), seed=3)
    await stop(runtime)
    interrupted = {r.call_id: sum(t.interrupted for t in r.turns) for r in records}
    assert sum(interrupted.values()) >= 8  # the script interrupts ~70% of agent turns
    assert dict(query("SELECT id, interrupted_turns FROM calls")) == interrupted
    rows = query("SELECT text, heard_text FROM turns WHERE role = 'agent' AND interrupted")
    assert len(rows) == sum(interrupted.values())
    assert all(heard != text and text.startswith(heard[:-1]) for text, heard in rows)
    barge_ins = query("SELECT count(*) FROM events WHERE type = 'BargeIn'")[0][0]
    assert barge_ins == sum(interrupted.values())
    ((rate,),) = query("SELECT sum(interrupted_turns) / sum(agent_turns) FROM interruptions")
    assert 0.4 < rate <= 1.0


async def test_provider_failure_ends_the_call_with_its_reason(db, query):
    runtime = await started(db)
    records = simulate_calls(runtime, 3, kinds=("provider_failure",))
    await stop(runtime)
    assert {r.end_reason for r in records} == {"provider_failed:llm/sim"}
    rows = query("SELECT end_reason FROM calls")
    assert rows == [("provider_failed:llm/sim",)] * 3
    failures = query(
        "SELECT data ->> 'provider', CAST(data ->> 'fatal' AS BOOLEAN) FROM events "
        "WHERE type = 'ProviderFailed'"
    )
    assert failures == [("llm/sim", True)] * 3
    assert query("SELECT sum(failed) FROM daily_calls")[0][0] == 3


async def test_rejected_call_is_recorded_without_a_start(db, query):
    runtime = await started(db)
    runtime.record_rejected(
        CallInfo(call_id="busy1", provider_call_id="CAbusy", from_number="+1555"), "busy"
    )
    await stop(runtime)
    assert query("SELECT id, end_reason, duration_s, turns FROM calls") == [
        ("busy1", "rejected:busy", 0.0, 0)
    ]


async def test_call_row_is_written_when_the_call_starts(db, query):
    runtime = await started(db)
    info = CallInfo(call_id="live1", provider_call_id="CAlive1", from_number="+15550002222")
    runtime.call_started(info, time.time())
    runtime.notify(
        info, UserTurnEnded(t=1.0, turn=1, text="hello", speech_end=0.9, reason="speech_final")
    )
    await sink_for(runtime).wait_flushed()
    ((cid, ended, reason, providers, models),) = query(
        "SELECT id, ended, end_reason, providers, models FROM calls"
    )
    assert (cid, ended, reason) == ("live1", None, None)
    assert providers == {"telephony": "sim", "stt": "sim", "llm": "sim", "tts": "sim"}
    assert models["llm"] == "sim-1"
    assert query("SELECT outcome FROM call_outcomes") == [("active",)]
    assert query("SELECT type, turn FROM events") == [("UserTurnEnded", 1)]
    await stop(runtime)


KILLED = textwrap.dedent(
    """
    import os, signal, sys, time
    import trio
    from hookline.analytics.plugin import sink_for
    from hookline_testkit.simulate import observer_runtime
    from hookline.events import UserSpeechStarted
    from hookline.providers import CallInfo

    async def main():
        runtime = observer_runtime(sys.argv[1])
        await runtime.start()
        info = CallInfo(call_id="killed1", provider_call_id="CAkilled", from_number="+15550003333")
        runtime.call_started(info, time.time())
        runtime.notify(info, UserSpeechStarted(t=trio.current_time(), turn=1))
        await sink_for(runtime).wait_flushed()
        os.kill(os.getpid(), signal.SIGKILL)

    trio.run(main)
    """
)


async def test_process_killed_mid_call_is_interrupted_after_restart(db, query, tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(KILLED)
    proc = await trio.run_process([sys.executable, str(script), str(db)], check=False)
    assert proc.returncode == -9  # really killed: no shutdown hook ran
    assert query("SELECT id, end_reason FROM calls") == [("killed1", None)]

    runtime = await started(db)
    assert sink_for(runtime).writer.recovered == ["killed1"]
    simulate_calls(runtime, 1, kinds=("normal",))
    await stop(runtime)
    assert query("SELECT end_reason, ended FROM calls WHERE id = 'killed1'") == [
        ("interrupted", None)
    ]
    assert query("SELECT type FROM events WHERE call_id = 'killed1'") == [("UserSpeechStarted",)]
    assert query("SELECT sum(interrupted) FROM daily_calls")[0][0] == 1


async def test_crash_loses_only_what_was_pending_and_spares_other_runtimes(db, query):
    a = await started(db)
    info = CallInfo(call_id="crash1", from_number="+15550004444")
    a.call_started(info, time.time())
    await sink_for(a).wait_flushed()
    # A second runtime on the same file shares the writer: its start must not mark the
    # first runtime's live call as interrupted.
    b = await started(db)
    assert sink_for(b).writer is sink_for(a).writer
    assert sink_for(b).writer.recovered == []
    await stop(b)
    assert query("SELECT end_reason FROM calls") == [(None,)]
    a.notify(info, UserTurnEnded(t=1.0, turn=1, text="lost", speech_end=0.9, reason="speech_final"))
    detach(a, abandon=True)  # the process "dies": pending rows are never written
    c = await started(db)
    assert sink_for(c).writer.recovered == ["crash1"]
    await stop(c)
    assert query("SELECT end_reason FROM calls") == [("interrupted",)]


def _salted(number: str, salt: str) -> str:
    return hmac.new(salt.encode(), number.encode(), hashlib.sha256).hexdigest()


async def test_caller_numbers_hashed_with_the_salt(db, query, monkeypatch):
    monkeypatch.setenv("TEST_SALT", "pepper-1")
    runtime = await started(db, caller_numbers="hashed", hash_salt_env="TEST_SALT")
    info = CallInfo(
        call_id="h1", provider_call_id="CAh1", from_number="+15551234567", to_number="+15559870000"
    )
    runtime.call_started(info, time.time())
    runtime.record_status("CAh1", {"CallStatus": "completed", "From": "+15551234567"})
    runtime.call_ended(info, CallRecord(
        call_id="h1", provider_call_id="CAh1", from_number="+15551234567",
        to_number="+15559870000", started=time.time() - 5, ended=time.time(),
        end_reason="caller_hangup", providers={},
    ))  # fmt: skip
    rejected = CallInfo(call_id="h2", from_number="+15551234567", to_number="+15559870000")
    runtime.record_rejected(rejected, "busy")
    await stop(runtime)
    rows = query("SELECT from_number, to_number FROM calls ORDER BY id")
    expected = _salted("+15551234567", "pepper-1")
    assert rows == [(expected, _salted("+15559870000", "pepper-1"))] * 2
    assert "+1555" not in str(query("SELECT * FROM calls"))
    # The status callback came with the provider id only, and its number is hashed too.
    ((call_id, data),) = query("SELECT call_id, data FROM events WHERE type = 'TelephonyStatus'")
    status = msgspec.json.decode(data.encode(), type=CallEvent)
    assert call_id == "h1"
    assert isinstance(status, TelephonyStatus) and status.fields["From"] == expected
    assert status.fields["CallStatus"] == "completed"


async def test_missing_salt_stops_start_up_with_one_clear_line(db, monkeypatch):
    monkeypatch.delenv("NO_SUCH_SALT", raising=False)
    runtime = observer_runtime(
        db, analytics=AnalyticsConfig(caller_numbers="hashed", hash_salt_env="NO_SUCH_SALT")
    )
    with pytest.raises(MissingSecret) as info:
        await runtime.start()
    assert "NO_SUCH_SALT" in str(info.value) and "analytics.hash_salt_env" in str(info.value)
    assert not db.exists()  # nothing was opened


async def test_numbers_dropped_and_transcripts_off(db, query):
    runtime = await started(db, caller_numbers="drop", transcripts=False)
    records = simulate_calls(runtime, 4, kinds=("tools", "barge_in"))
    await stop(runtime)
    assert query("SELECT count(*) FROM calls WHERE from_number IS NULL AND to_number IS NULL") == [
        (4,)
    ]
    assert query("SELECT count(*), count(text), count(heard_text) FROM turns")[0] == (
        sum(len(r.turns) for r in records),
        0,
        0,
    )
    assert query("SELECT count(*) > 0, count(arguments), count(result) FROM tool_calls") == [
        (True, 0, 0)
    ]
    # Latencies and outcomes are still there; no event carries a word of the conversation.
    assert query("SELECT count(*) FROM latencies")[0][0] > 0
    stored = " ".join(r[0] for r in query("SELECT CAST(data AS VARCHAR) FROM events"))
    for r in records:
        for t in r.turns:
            assert t.text not in stored
    assert (
        query("SELECT count(*) FROM events WHERE type = 'BargeIn' AND data ->> 'heard_text' = ''")[
            0
        ][0]
        > 0
    )


async def test_raw_events_can_be_turned_off(db, query):
    runtime = await started(db, events=False)
    simulate_calls(runtime, 3)
    await stop(runtime)
    assert query("SELECT count(*) FROM events") == [(0,)]
    assert query("SELECT count(*) FROM latencies")[0][0] > 0


async def test_disabled_analytics_opens_nothing(db):
    runtime = await started(db, enabled=False)
    assert sink_for(runtime) is None
    simulate_calls(runtime, 2)
    await stop(runtime)
    assert not db.exists()


async def test_rows_come_from_events_when_the_record_leaves_them_out(db, query):
    """A record with empty metrics, tool calls and usage still gets them from its events."""
    runtime = await started(db)
    info = CallInfo(call_id="ev1", from_number="+15550005555")
    runtime.call_started(info, 1_700_000_000.0)
    runtime.notify(
        info, ToolCallStarted(t=1, turn=1, call_id="t1", tool="check", arguments='{"d": 1}')
    )
    finished = ToolCallFinished(
        t=2,
        turn=1,
        call_id="t1",
        tool="check",
        ok=False,
        result="",
        error="ToolError: down",
        latency_ms=42.0,
    )
    runtime.notify(info, finished)
    runtime.notify(info, TurnMetrics(t=3, turn=1, metrics={"voice_to_voice": 900.0, "tool": 42.0}))
    runtime.notify(
        info,
        UsageReported(t=3, turn=1, provider="llm/sim", prompt_tokens=100, completion_tokens=10),
    )
    runtime.notify(info, UsageReported(t=3, turn=1, provider="tts/sim", characters=50))
    runtime.call_ended(info, CallRecord(
        call_id="ev1", provider_call_id="", from_number="+15550005555", to_number="",
        started=1_700_000_000.0, ended=1_700_000_010.0, end_reason="caller_hangup", providers={},
        turns=[TurnRecord(index=1, role="agent", text="hm", started=1_700_000_001.0,
                          ended=1_700_000_002.0)],
    ))  # fmt: skip
    await stop(runtime)
    assert set(query("SELECT metric, ms FROM latencies")) == {
        ("voice_to_voice", 900.0),
        ("tool", 42.0),
    }
    assert query("SELECT tool, arguments, ok, error, latency_ms FROM tool_calls") == [
        ("check", '{"d": 1}', False, "ToolError: down", 42.0)
    ]
    assert query("SELECT llm_prompt_tokens, tts_characters FROM calls") == [(100, 50)]


async def test_a_refused_row_costs_only_itself(db, query, caplog):
    runtime = await started(db)
    good = CallInfo(call_id="good1")
    bad = CallInfo(call_id="bad1")

    def record(info: CallInfo, tokens: float) -> CallRecord:
        return CallRecord(
            call_id=info.call_id, provider_call_id="", from_number="", to_number="",
            started=1_700_000_000.0, ended=1_700_000_001.0, end_reason="caller_hangup",
            providers={}, usage={"llm_prompt_tokens": tokens},
            turns=[TurnRecord(index=0, role="user", text="hi", started=1_700_000_000.0,
                              ended=1_700_000_000.5)],
        )  # fmt: skip

    with caplog.at_level(logging.ERROR, logger="hookline.analytics"):
        runtime.call_ended(bad, record(bad, 1e30))  # does not fit a BIGINT
        runtime.call_ended(good, record(good, 100))
        await stop(runtime)
    assert query("SELECT id, llm_prompt_tokens FROM calls") == [("good1", 100)]
    assert sorted(query("SELECT call_id FROM turns")) == [("bad1",), ("good1",)]
    assert any("dropped one calls row for call bad1" in r.message for r in caplog.records)


async def test_each_runtime_gets_its_own_sink_and_nothing_leaks(db, tmp_path, query):
    other = tmp_path / "other.duckdb"
    a, b = await started(db), observer_runtime(other)
    await b.start()
    assert sink_for(a).writer is not sink_for(b).writer
    simulate_calls(a, 2, seed=1)
    simulate_calls(b, 3, seed=2)
    await stop(a)
    await stop(b)
    assert query("SELECT count(*) FROM calls") == [(2,)]
    assert query("SELECT count(*) FROM calls", path=other) == [(3,)]
    for rt in (a, b):
        assert sink_for(rt) is None
        names = [n for n, _ in rt.plugins.pm.list_name_plugin()]
        assert not [n for n in names if "sink" in n]


async def test_two_runtimes_on_one_plugin_manager_each_record_their_own_calls(db, tmp_path, query):
    # The call hooks receive the runtime, so sharing one plugin manager is safe.
    other = tmp_path / "shared-pm.duckdb"
    a = await started(db)
    b = observer_runtime(other, plugins=a.plugins)
    await b.start()
    simulate_calls(a, 2, seed=3)
    simulate_calls(b, 1, seed=4)
    await stop(a)
    await stop(b)
    assert query("SELECT count(*) FROM calls") == [(2,)]
    assert query("SELECT count(*) FROM calls", path=other) == [(1,)]


async def test_events_after_the_call_ended_are_kept(db, query):
    runtime = await started(db)
    simulate_calls(runtime, 1, kinds=("normal",))
    pcid, cid = "CAsim00700000", "sim00700000"
    runtime.record_status(pcid, {"CallStatus": "completed"})
    runtime.notify(CallInfo(call_id=cid), BargeIn(t=1, turn=9, heard_text="x", interim_text="y"))
    await stop(runtime)
    rows = query(
        "SELECT call_id, provider_call_id, type FROM events "
        "WHERE type IN ('TelephonyStatus', 'BargeIn')"
    )
    assert sorted(rows) == [("", pcid, "TelephonyStatus"), (cid, "", "BargeIn")]

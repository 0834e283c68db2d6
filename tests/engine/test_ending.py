"""Calls end when the caller is gone, the phrase cache stays bounded, and a stalled LLM
gets a filler then a fallback line that does not blame the caller (issue 10, items 2, 7
and 12). Scripted providers on trio's MockClock."""

from __future__ import annotations

import gc
import json
import tracemalloc
from pathlib import Path

import msgspec
import pytest
import trio

from hookline import ProviderUnavailable, ToolContext, ToolSet, tool
from hookline.config import AgentConfig, load_config
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

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
# About 5 s of scripted speech: long enough to hang up in the middle of it.
LONG_GOODBYE = "Thanks so much for calling Riverside Auto Service, and drive safely out there!"


def _end_call(goodbye: str) -> Reply:
    return Reply(tool_calls=[("end_call", json.dumps({"goodbye": goodbye}))])


# ============================================================ item 2: hang-up during the goodbye


async def test_caller_hanging_up_during_the_goodbye_ends_the_call_at_once(autojump_clock):
    stt = ScriptedSTT()
    runtime = await scripted_runtime(stt=stt, llm=ScriptedLLM([_end_call(LONG_GOODBYE)]))
    script = [WaitForAgent(), Say("That's all, thanks"), Pause(2), HangUpStep()]
    leg = ScriptedLeg(call_info(), script, stt)
    record = await run_call(runtime, leg)
    ended = trio.current_time()

    assert leg.caller_hung_up_at is not None
    # The goodbye was playing when the caller hung up: its mark never came back.
    said_end = leg.said_at[-1][1]
    assert any(said_end < p.t < leg.caller_hung_up_at for p in leg.received)
    assert record.turns[-1].text == LONG_GOODBYE and record.turns[-1].heard_text == ""
    # The call ended with the hang-up, not 60 s later when end_call timed out.
    assert ended - leg.caller_hung_up_at < 1.0
    assert record.end_reason == "caller_hangup"
    assert runtime.active_calls == 0
    assert leg.hung_up_at is None  # nothing to hang up: the caller is gone


async def test_caller_hanging_up_during_the_transfer_announcement(autojump_clock):
    stt = ScriptedSTT()
    llm = ScriptedLLM([Reply(tool_calls=[("transfer_call", '{"reason": "wants a person"}')])])
    config = make_config(agent={"transfer_number": "+15550001111"})
    runtime = await scripted_runtime(config, stt=stt, llm=llm)
    script = [WaitForAgent(), Say("Let me talk to a person"), Pause(1), HangUpStep()]
    leg = ScriptedLeg(call_info(), script, stt)
    record = await run_call(runtime, leg)
    ended = trio.current_time()

    assert leg.caller_hung_up_at is not None
    assert ended - leg.caller_hung_up_at < 1.0
    assert record.end_reason == "caller_hangup"
    assert leg.transferred_to is None  # no transfer of a call that is already over
    assert runtime.active_calls == 0


async def test_speech_stream_failing_during_the_goodbye_does_not_hold_the_call(autojump_clock):
    # The model's goodbye goes through the call's TTS stream, which breaks on it: the
    # call ends with the failure (and the apology), not when end_call times out.
    stt = ScriptedSTT()
    tts = ScriptedTTS(fail_after_flushes=1)
    runtime = await scripted_runtime(stt=stt, tts=tts, llm=ScriptedLLM([_end_call(LONG_GOODBYE)]))
    script = [WaitForAgent(), Say("That's all, thanks"), Pause(120)]
    leg = ScriptedLeg(call_info(), script, stt)
    record = await run_call(runtime, leg)

    assert record.end_reason == "provider_failed:tts/scripted"
    assert leg.hung_up_at is not None
    assert leg.hung_up_at - leg.said_at[-1][1] < 15  # the apology is ~5 s; 60 s before
    assert runtime.active_calls == 0


# ============================================================ item 7: the phrase cache is bounded


async def test_model_written_goodbyes_are_not_cached(autojump_clock):
    stt, tts = ScriptedSTT(), ScriptedTTS()
    goodbyes = iter(f"Goodbye number {n}, and thanks for calling today!" for n in range(1000))
    llm = ScriptedLLM(respond=lambda messages: _end_call(next(goodbyes)))
    runtime = await scripted_runtime(stt=stt, tts=tts, llm=llm)
    agent = runtime.config.agent
    configured = {
        agent.greeting, agent.goodbye, agent.reprompt, agent.apology,
        agent.fallback_line, agent.transfer_announcement, *agent.fillers,
    }  # fmt: skip
    assert set(runtime.phrases) == configured
    cached = dict(runtime.phrases)

    for _ in range(20):
        leg = ScriptedLeg(call_info(), [WaitForAgent(), Say("That's all, thanks")], stt)
        record = await run_call(runtime, leg)
        assert record.end_reason == "agent_hangup"
        assert record.turns[-1].heard_text.startswith("Goodbye number")

    # Each goodbye was streamed for its call and kept nowhere in the process.
    assert dict(runtime.phrases) == cached
    assert sum(1 for t in tts.spoken if t.startswith("Goodbye number")) == 20
    assert not any(t.startswith("Goodbye number") for t in tts.synthesized)
    with pytest.raises(TypeError):
        runtime.phrases["anything"] = b""  # type: ignore[index]


async def test_memory_does_not_grow_with_unique_goodbyes(autojump_clock):
    # Slow scripted speech makes each unique goodbye ~400 kB of audio (~4 MB over 10
    # calls if kept); the caller hangs up a second into it, so the calls stay short.
    stt, tts = ScriptedSTT(), ScriptedTTS(chars_per_s=2.0)
    words = "and thanks again for choosing Riverside Auto Service for your car today"
    goodbyes = iter(f"Goodbye number {n}, {words}!" for n in range(1000))
    llm = ScriptedLLM(respond=lambda messages: _end_call(next(goodbyes)))
    config = make_config(agent={"greeting": "Hi."})
    runtime = await scripted_runtime(config, stt=stt, tts=tts, llm=llm)

    async def calls(n: int) -> None:
        for _ in range(n):
            script = [WaitForAgent(), Say("That's all"), Pause(1), HangUpStep()]
            leg = ScriptedLeg(call_info(), script, stt)
            assert (await run_call(runtime, leg)).end_reason == "caller_hangup"

    await calls(2)  # warm up: first-use allocations are not growth
    llm.requests.clear()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        await calls(10)
        llm.requests.clear()  # the scripted LLM keeps every request; the runtime does not
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 500_000, f"{grown} bytes kept after 10 calls"


# ============================================================ item 12: a stalled LLM


async def test_stalled_llm_gets_a_filler_at_the_deadline_then_the_fallback(autojump_clock):
    stt = ScriptedSTT()
    stalled = Reply(
        first_token_s=6.0, error=ProviderUnavailable("no first token", provider="llm/scripted")
    )
    runtime = await scripted_runtime(stt=stt, llm=ScriptedLLM([stalled]))
    policy, agent = runtime.config.policy, runtime.config.agent
    assert 1.0 <= policy.llm_filler_after_s <= 2.0
    script = [WaitForAgent(), Say("Are you open Saturday"), Pause(12), HangUpStep()]
    leg = ScriptedLeg(call_info(), script, stt)
    record = await run_call(runtime, leg)

    said_end = leg.said_at[-1][1]
    after = [p for p in leg.received if p.t > said_end]
    turn_end = said_end + stt.endpointing_s
    # First audio after the caller's turn: the cached filler, at the first-token deadline.
    assert after[0].audio == runtime.phrases[agent.fillers[0]]
    assert after[0].t == pytest.approx(turn_end + policy.llm_filler_after_s, abs=0.05)
    # Then, when the LLM gives up, the fallback line.
    assert after[1].audio == runtime.phrases[agent.fallback_line]
    assert after[1].t == pytest.approx(turn_end + 6.0, abs=0.05)
    assert record.turns[2].text == f"{agent.fillers[0]} {agent.fallback_line}"
    assert record.end_reason == "caller_hangup"


async def test_a_prompt_llm_gets_no_filler(autojump_clock):
    stt = ScriptedSTT()
    llm = ScriptedLLM([Reply("Yes, from eight to noon.", first_token_s=1.0)])
    runtime = await scripted_runtime(stt=stt, llm=llm)
    script = [WaitForAgent(), Say("Are you open Saturday"), WaitForAgent(), HangUpStep()]
    record = await run_call(runtime, ScriptedLeg(call_info(), script, stt))
    assert record.turns[2].text == "Yes, from eight to noon."


@pytest.mark.parametrize("source", ["default", "automotive.toml", "demo.toml"])
def test_fallback_line_does_not_blame_the_caller(source):
    if source == "default":
        line = AgentConfig().fallback_line
    elif source == "demo.toml":
        from hookline_testkit.demo import DEFAULT_CONFIG

        line = load_config(DEFAULT_CONFIG).agent.fallback_line
    else:
        line = load_config(CONFIG_DIR / source).agent.fallback_line
    lowered = line.lower()
    for blame in ("catch", "missed", "didn't hear", "did not hear", "understand"):
        assert blame not in lowered, line
    assert "my end" in lowered or "trouble" in lowered, line


async def test_no_filler_after_an_answer_that_came_while_the_agent_was_talking(autojump_clock):
    # Round two of a response passes the first-token deadline while the first round's
    # sentence is still playing; its answer comes before that gap. No filler after it.
    stt = ScriptedSTT()
    first = Reply(
        "Let me book that slot for you right away.", tool_calls=[("book", '{"slot": "mon-9"}')]
    )
    llm = ScriptedLLM([first, Reply("Done, you're booked.", first_token_s=2.0)])
    config = make_config(providers={"tools": ["builtin", "shop"]})
    runtime = await scripted_runtime(config, stt=stt, llm=llm, plugins=[_BookTool()])
    script = [WaitForAgent(), Say("Book Monday at nine"), WaitForAgent(), HangUpStep()]
    record = await run_call(runtime, ScriptedLeg(call_info(), script, stt))
    assert record.turns[2].text == "Let me book that slot for you right away. Done, you're booked."
    assert record.turns[2].heard_text == record.turns[2].text


class _Slot(msgspec.Struct):
    slot: str


class _BookTool:
    @hookimpl
    def hookline_toolsets(self):
        @tool(side_effect=True)
        async def book(params: _Slot, ctx: ToolContext) -> dict:
            """Book a slot."""
            return {"booked": params.slot}

        return [ToolSet(name="shop", create=lambda settings, rt: [book])]


async def test_a_model_written_goodbye_counts_its_speech_latency_as_the_tts_share(
    autojump_clock,
):
    # The goodbye end_call speaks goes through the call's TTS stream (it is not a cached
    # phrase): its time to first byte is the TTS's share, not the runtime's overhead.
    stt = ScriptedSTT()
    goodbye = "Thanks for calling, Sam. Bye!"
    runtime = await scripted_runtime(stt=stt, llm=ScriptedLLM([_end_call(goodbye)]))
    script = [WaitForAgent(), Say("No, that's all"), WaitForAgent(timeout=30)]
    record = await run_call(runtime, ScriptedLeg(call_info(), script, stt))
    last = record.turns[-1]
    assert last.text == goodbye
    m = last.metrics
    # Scripted latencies: first token 200 ms, TTS first byte 100 ms.
    assert m["tts_first_byte"] == pytest.approx(100, abs=1)
    assert m["runtime_overhead"] < 50

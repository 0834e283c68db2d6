"""The call engine, end to end over scripted providers on trio's MockClock."""

from __future__ import annotations

import msgspec
import pytest
import trio
import trio.lowlevel

from hookline import ProviderAuthError, ProviderUnavailable, ToolContext, ToolError, ToolSet, tool
from hookline.events import BargeIn, CallEvent, ProviderFailed, TurnMetrics
from hookline.hookspecs import hookimpl
from hookline.testing.harness import make_config, run_call, scripted_runtime
from hookline.testing.scripted import (
    HangUpStep,
    Pause,
    Press,
    Reply,
    Say,
    ScriptedLeg,
    ScriptedLLM,
    ScriptedSTT,
    ScriptedTTS,
    WaitForAgent,
    call_info,
)


class Recorder:
    """An observer plugin that keeps every event, as a third-party sink would."""

    def __init__(self) -> None:
        self.events: list[CallEvent] = []
        self.ended: list = []

    @hookimpl
    def hookline_call_event(self, call, event):
        self.events.append(event)

    @hookimpl
    def hookline_call_ended(self, call, record):
        self.ended.append(record)

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]


async def test_turn_taking_answers_each_user_turn(autojump_clock):
    stt, llm = ScriptedSTT(), ScriptedLLM(["Sure. What day works?", "Great, see you then."])
    runtime = await scripted_runtime(stt=stt, llm=llm)
    script = [WaitForAgent(), Say("I need an oil change"), WaitForAgent(), Say("Friday")]
    script += [WaitForAgent(), HangUpStep()]
    record = await run_call(runtime, ScriptedLeg(call_info(), script, stt))

    assert record.end_reason == "caller_hangup"
    assert [(t.role, t.text) for t in record.turns] == [
        ("agent", runtime.config.agent.greeting),
        ("user", "I need an oil change"),
        ("agent", "Sure. What day works?"),
        ("user", "Friday"),
        ("agent", "Great, see you then."),
    ]
    # The second request carries the whole history, ending with the new user turn.
    roles = [(m.role, m.content) for m in llm.requests[1]]
    assert roles[-3:] == [
        ("user", "I need an oil change"),
        ("assistant", "Sure. What day works?"),
        ("user", "Friday"),
    ]
    agent_turn = record.turns[2]
    assert agent_turn.heard_text == agent_turn.text and not agent_turn.interrupted
    m = agent_turn.metrics
    for key in ("end_of_turn_delay", "llm_first_token", "tts_first_byte", "voice_to_voice"):
        assert key in m
    # Scripted latencies: endpointing 300 ms, first token 200 ms, TTS first byte 100 ms.
    assert m["end_of_turn_delay"] == pytest.approx(300, abs=25)
    assert m["llm_first_token"] == pytest.approx(200, abs=1)
    assert m["tts_first_byte"] == pytest.approx(100, abs=1)
    assert m["voice_to_voice"] >= 600
    assert m["runtime_overhead"] < 50


async def test_greeting_comes_from_cache_within_one_tick(autojump_clock):
    tts = ScriptedTTS()
    runtime = await scripted_runtime(tts=tts)
    greeting = runtime.config.agent.greeting
    assert tts.synthesized[greeting] == 1  # synthesized once, at start-up
    leg = ScriptedLeg(call_info(), [WaitForAgent(), HangUpStep()], ScriptedSTT())
    assert runtime.try_admit()
    async with leg.running():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runtime.run_call, leg)
            await trio.testing.wait_all_tasks_blocked()
            start = leg.started_at
            assert leg.first_audio_at == start  # no clock time passed: no TTS round trip
            assert leg.received[0].audio == runtime.phrases[greeting]
    # A second call reuses the cache: still one synthesis per phrase per process.
    await run_call(runtime, ScriptedLeg(call_info(), [WaitForAgent(), HangUpStep()], ScriptedSTT()))
    assert tts.synthesized[greeting] == 1
    assert tts.spoken == []  # the greeting never went through the streaming TTS


async def test_barge_in_keeps_exactly_the_heard_sentences(autojump_clock):
    stt = ScriptedSTT()
    long_answer = (
        "We have openings on Monday. We also have Tuesday at nine. "
        "Wednesday is wide open. Thursday afternoon works too."
    )
    llm = ScriptedLLM([long_answer, "Sure, Tuesday at nine it is."])
    recorder = Recorder()
    runtime = await scripted_runtime(stt=stt, llm=llm, plugins=[recorder])
    script = [WaitForAgent(), Say("When can you fit me in"), Pause(4.5)]
    script += [Say("Tuesday at nine please"), WaitForAgent(), HangUpStep()]
    leg = ScriptedLeg(call_info(), script, stt)
    record = await run_call(runtime, leg)

    agent = record.turns[2]
    assert agent.interrupted
    heard = agent.heard_text
    assert heard and heard != agent.text
    # The heard text is a prefix of whole sentences, and exactly what the history keeps.
    sentences = ["We have openings on Monday.", "We also have Tuesday at nine."]
    assert heard in (sentences[0], " ".join(sentences))
    history = llm.requests[1]
    assistant = [m.content for m in history if m.role == "assistant"]
    assert assistant[-1] == heard
    assert history[-1].content == "Tuesday at nine please"
    # Twilio's buffer was cleared, and the interrupted response's LLM stream was closed.
    assert leg.clears
    (barge,) = recorder.of(BargeIn)
    assert barge.heard_text == heard
    # Every mark that came back as played belongs to a heard segment; no audio was
    # played after the clear except the next answer.
    played_after_clear = [p for p in leg.received if p.t > leg.clears[0]]
    assert played_after_clear, "the next answer should be spoken"


async def test_backchannel_does_not_interrupt(autojump_clock):
    stt = ScriptedSTT()
    answer = "Your car is ready. You can pick it up until six tonight. We are on Main Street."
    llm = ScriptedLLM([answer])
    runtime = await scripted_runtime(stt=stt, llm=llm)
    script = [WaitForAgent(), Say("Is my car ready"), Pause(2.5), Say("mhm"), Pause(0.6)]
    script += [Say("okay"), Pause(3), HangUpStep()]
    leg = ScriptedLeg(call_info(), script, stt)
    record = await run_call(runtime, leg)

    agent = record.turns[2]
    assert not agent.interrupted
    assert agent.heard_text == answer
    assert leg.clears == []
    assert len(llm.requests) == 1  # the backchannels were not answered
    assert [t.role for t in record.turns] == ["agent", "user", "agent"]


class Lookup(msgspec.Struct):
    plate: str


class Booking(msgspec.Struct):
    slot: str


def make_tools(log: list[str], *, slow_s: float = 0.0):
    @tool
    async def lookup(params: Lookup, ctx: ToolContext) -> dict:
        """Look up a vehicle."""
        log.append(f"lookup:{params.plate}")
        if params.plate == "BOOM":
            raise RuntimeError("database on fire")
        if params.plate == "NOPE":
            raise ToolError("no vehicle with that plate")
        if params.plate == "SLOW":
            await trio.sleep(60)
        return {"plate": params.plate, "make": "Subaru"}

    @tool(side_effect=True)
    async def book(params: Booking, ctx: ToolContext) -> dict:
        """Book a slot."""
        log.append(f"book-start:{params.slot}")
        await trio.sleep(slow_s)
        log.append(f"book-done:{params.slot}")
        return {"booked": params.slot}

    class Plugin:
        @hookimpl
        def hookline_toolsets(self):
            return [ToolSet(name="shop", create=lambda settings, rt: [lookup, book])]

    return Plugin()


def tool_config(**policy):
    return make_config(providers={"tools": ["builtin", "shop"]}, policy=policy)


async def test_tool_loop_reports_errors_back_to_the_llm(autojump_clock):
    stt, log = ScriptedSTT(), []
    llm = ScriptedLLM(
        [
            Reply(tool_calls=[("lookup", '{"plate": 7}')]),  # invalid: not a string
            Reply(tool_calls=[("lookup", '{"plate": "BOOM"}')]),  # raises
            Reply(tool_calls=[("lookup", '{"plate": "SLOW"}')]),  # times out
            Reply(tool_calls=[("lookup", '{"plate": "NOPE"}')]),  # ToolError
            Reply(tool_calls=[("lookup", '{"plate": "ABC123"}')]),
            "Found your Subaru.",
        ]
    )
    recorder = Recorder()
    runtime = await scripted_runtime(
        tool_config(tool_timeout_s=2.0, max_tool_rounds=6),
        stt=stt,
        llm=llm,
        plugins=[make_tools(log), recorder],
    )
    script = [WaitForAgent(), Say("Look up my car"), WaitForAgent(timeout=60), HangUpStep()]
    record = await run_call(runtime, ScriptedLeg(call_info(), script, stt))

    calls = record.turns[2].tool_calls
    assert [c.ok for c in calls] == [False, False, False, False, True]
    assert calls[0].error.startswith("invalid_arguments")
    assert "RuntimeError" in calls[1].error
    assert calls[2].error == "timeout"
    assert calls[3].error == "tool_error: no vehicle with that plate"
    tool_msgs = [m for m in llm.requests[-1] if m.role == "tool"]
    assert len(tool_msgs) == 5
    assert "Expected `str`, got `int`" in tool_msgs[0].content
    assert msgspec.json.decode(tool_msgs[3].content) == {"error": "no vehicle with that plate"}
    assert msgspec.json.decode(tool_msgs[4].content) == {"plate": "ABC123", "make": "Subaru"}
    # Every tool call in the history is followed by its result.
    assistant_calls = [
        c.id for m in llm.requests[-1] if m.role == "assistant" for c in m.tool_calls
    ]
    assert assistant_calls == [m.tool_call_id for m in tool_msgs]
    assert record.end_reason == "caller_hangup"
    assert record.turns[2].text.endswith("Found your Subaru.")
    # The slow tool got a cached filler.
    assert "One moment, let me check that." in record.turns[2].text


async def test_tool_rounds_are_bounded(autojump_clock):
    stt, log = ScriptedSTT(), []
    loop = Reply(tool_calls=[("lookup", '{"plate": "ABC"}')])
    llm = ScriptedLLM(respond=lambda messages: loop)
    runtime = await scripted_runtime(
        tool_config(max_tool_rounds=3), stt=stt, llm=llm, plugins=[make_tools(log)]
    )
    script = [WaitForAgent(), Say("Look up my car"), Pause(5), HangUpStep()]
    await run_call(runtime, ScriptedLeg(call_info(), script, stt))
    assert log == ["lookup:ABC"] * 3
    assert llm.tools_seen[-1] == []  # the last round offers no tools


async def test_side_effect_tool_finishes_through_barge_in_and_later_ones_never_run(
    autojump_clock,
):
    stt, log = ScriptedSTT(), []
    llm = ScriptedLLM(
        [
            Reply(
                "Booking that now.",
                tool_calls=[("book", '{"slot": "mon-9"}'), ("book", '{"slot": "tue-9"}')],
            ),
            "Okay, what else?",
        ]
    )
    runtime = await scripted_runtime(
        tool_config(filler_after_s=30), stt=stt, llm=llm, plugins=[make_tools(log, slow_s=3.0)]
    )
    script = [WaitForAgent(), Say("Book Monday at nine"), Pause(2.2)]
    script += [Say("wait actually hold on"), WaitForAgent(timeout=20), HangUpStep()]
    record = await run_call(runtime, ScriptedLeg(call_info(), script, stt))

    # The first booking had started: it finished despite the interruption.
    assert log == ["book-start:mon-9", "book-done:mon-9"]
    history = llm.requests[1]
    (call_msg,) = [m for m in history if m.role == "assistant" and m.tool_calls]
    assert [c.name for c in call_msg.tool_calls] == ["book"]
    tool_msg = history[history.index(call_msg) + 1]
    assert tool_msg.role == "tool" and "mon-9" in tool_msg.content
    assert history[-1] == history[-1].__class__(role="user", content="wait actually hold on")
    assert record.turns[2].tool_calls[0].ok


async def test_silence_reprompts_then_hangs_up(autojump_clock):
    stt = ScriptedSTT()
    runtime = await scripted_runtime(
        make_config(policy={"silence_reprompt_s": 5, "max_reprompts": 2}), stt=stt
    )
    leg = ScriptedLeg(call_info(), [], stt, after_script=120)
    record = await run_call(runtime, leg)
    agent = runtime.config.agent
    texts = [(t.role, t.text) for t in record.turns]
    assert record.end_reason == "silence"
    # The reprompts and the goodbye are agent turns of their own, each heard in full.
    assert texts == [
        ("agent", agent.greeting),
        ("agent", agent.reprompt),
        ("agent", agent.reprompt),
        ("agent", agent.goodbye),
    ]
    assert all(t.heard_text == t.text for t in record.turns)
    assert leg.hung_up_at is not None and not leg.caller_hung_up
    # Greeting ~4 s, then 5 s of silence per reprompt: well before the script's 120 s.
    assert leg.hung_up_at - leg.started_at < 40


async def test_dtmf_reaches_the_llm_and_transfer_key(autojump_clock):
    stt = ScriptedSTT()
    llm = ScriptedLLM(["Thanks, I have your account."])
    config = make_config(agent={"transfer_number": "+15550001111", "transfer_digit": "0"})
    runtime = await scripted_runtime(config, stt=stt, llm=llm)
    script = [WaitForAgent(), Press("4"), Press("2"), Press("#"), WaitForAgent(), Press("0")]
    script += [Pause(10)]
    leg = ScriptedLeg(call_info(), script, stt)
    record = await run_call(runtime, leg)
    assert llm.requests[0][-1].content == "[The caller pressed the keys: 4 2 #]"
    assert leg.transferred_to == "+15550001111"
    assert record.end_reason == "transferred"
    assert record.turns[-1].text.endswith(config.agent.transfer_announcement)


async def test_end_call_tool_says_goodbye_then_hangs_up(autojump_clock):
    stt = ScriptedSTT()
    llm = ScriptedLLM([Reply(tool_calls=[("end_call", '{"goodbye": "Bye now!"}')])])
    # The goodbye takes longer than filler_after_s to be heard: end_call gets no filler.
    runtime = await scripted_runtime(make_config(policy={"filler_after_s": 0.2}), stt=stt, llm=llm)
    leg = ScriptedLeg(call_info(), [WaitForAgent(), Say("That's all, thanks")], stt)
    record = await run_call(runtime, leg)
    assert record.end_reason == "agent_hangup"
    assert leg.hung_up_at is not None
    # The goodbye was heard (its mark came back as played) before the hang-up.
    played = [t for t, name, ok in leg.marks_returned if ok]
    assert played[-1] <= leg.hung_up_at
    assert record.turns[-1].heard_text == "Bye now!"
    assert record.turns[-1].text == "Bye now!"


async def test_llm_failure_speaks_fallback_and_call_goes_on(autojump_clock):
    stt = ScriptedSTT()
    llm = ScriptedLLM(
        [Reply(error=ProviderUnavailable("429 after retries", provider="llm/scripted")), "Yes."]
    )
    recorder = Recorder()
    runtime = await scripted_runtime(stt=stt, llm=llm, plugins=[recorder])
    script = [WaitForAgent(), Say("Are you open Saturday"), WaitForAgent()]
    script += [Say("Are you open Saturday"), WaitForAgent(), HangUpStep()]
    record = await run_call(runtime, ScriptedLeg(call_info(), script, stt))
    assert record.end_reason == "caller_hangup"
    assert record.turns[2].text == runtime.config.agent.fallback_line
    assert record.turns[4].text == "Yes."
    (failure,) = recorder.of(ProviderFailed)
    assert not failure.fatal and failure.provider == "llm/scripted"


async def test_one_failing_call_does_not_touch_another(autojump_clock):
    good_stt = ScriptedSTT()
    broken_stt = ScriptedSTT(fail_after_s=5.0)
    llm = ScriptedLLM(respond=lambda messages: "Sure.")
    recorder = Recorder()
    runtime = await scripted_runtime(stt=good_stt, llm=llm, plugins=[recorder])
    # Two calls on one runtime; the second call's STT stream breaks after 5 s.
    runtime_broken = runtime.stt
    records = {}

    async def call(name, stt, script):
        runtime.stt = stt
        leg = ScriptedLeg(call_info(), script, stt)
        records[name] = await run_call(runtime, leg)
        runtime.stt = runtime_broken

    script = [WaitForAgent(), Say("Hello there"), WaitForAgent(), Pause(6)]
    script += [Say("Thanks bye"), WaitForAgent(), HangUpStep()]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, "broken", broken_stt, script)
        await trio.lowlevel.checkpoint()
        nursery.start_soon(call, "good", good_stt, script)
    assert records["broken"].end_reason == "provider_failed:stt/scripted"
    assert records["good"].end_reason == "caller_hangup"
    assert [t.text for t in records["good"].turns if t.role == "user"] == [
        "Hello there",
        "Thanks bye",
    ]
    # The broken call apologised before hanging up.
    assert records["broken"].turns[-1].text.endswith(runtime.config.agent.apology)
    fatal = [e for e in recorder.of(ProviderFailed) if e.fatal]
    assert len(fatal) == 1
    assert runtime.active_calls == 0


async def test_auth_failure_at_call_start_is_recorded(autojump_clock):
    runtime = await scripted_runtime(stt=ScriptedSTT(auth_fail=True))
    leg = ScriptedLeg(call_info(), [Pause(30)], ScriptedSTT())
    record = await run_call(runtime, leg)
    assert record.end_reason == "provider_failed:stt/scripted"
    assert leg.hung_up_at is not None
    assert leg.received[-1].audio == runtime.phrases[runtime.config.agent.apology]


async def test_tts_auth_failure_mid_call(autojump_clock):
    stt = ScriptedSTT()
    llm = ScriptedLLM([Reply(error=ProviderAuthError("bad key", provider="llm/scripted"))])
    runtime = await scripted_runtime(stt=stt, llm=llm)
    script = [WaitForAgent(), Say("Hi there"), Pause(20)]
    record = await run_call(runtime, ScriptedLeg(call_info(), script, stt))
    assert record.end_reason == "provider_failed:llm/scripted"


async def test_turn_metrics_are_emitted(autojump_clock):
    stt = ScriptedSTT()
    recorder = Recorder()
    runtime = await scripted_runtime(stt=stt, llm=ScriptedLLM(["Sure."]), plugins=[recorder])
    script = [WaitForAgent(), Say("Hi there"), WaitForAgent(), HangUpStep()]
    await run_call(runtime, ScriptedLeg(call_info(), script, stt))
    (metrics,) = recorder.of(TurnMetrics)
    assert metrics.turn == 2 and metrics.metrics["voice_to_voice"] > 0
    assert recorder.ended[0].usage["llm_prompt_tokens"] == 100


async def test_maximum_call_length(autojump_clock):
    stt = ScriptedSTT()
    runtime = await scripted_runtime(make_config(policy={"max_call_s": 20}), stt=stt)
    script = [WaitForAgent(), Say("Tell me about your shop")]
    script += [WaitForAgent(), Say("and more")] * 10
    leg = ScriptedLeg(call_info(), script, stt)
    record = await run_call(runtime, leg)
    assert record.end_reason == "max_duration"
    assert record.turns[-1].text.endswith(runtime.config.agent.goodbye)
    assert leg.hung_up_at - leg.started_at < 20 + 10


async def test_drain_says_goodbye_to_active_calls(autojump_clock):
    stt = ScriptedSTT()
    runtime = await scripted_runtime(stt=stt)
    leg = ScriptedLeg(call_info(), [WaitForAgent(), Say("Hello"), Pause(300)], stt)
    records = []

    async def call():
        records.append(await run_call(runtime, leg))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        await trio.sleep(8)
        await runtime.drain(grace_s=2)
        assert not runtime.try_admit()  # draining: no new calls
    (record,) = records
    assert record.end_reason == "shutdown"
    assert leg.hung_up_at is not None
    assert record.turns[-1].text.endswith(runtime.config.agent.goodbye)


async def test_admission_limit(autojump_clock):
    runtime = await scripted_runtime(make_config(server={"max_concurrent_calls": 2}))
    assert runtime.try_admit() and runtime.try_admit()
    assert not runtime.try_admit()
    runtime.release()
    assert runtime.try_admit()


async def test_observers_may_ask_for_the_runtime(autojump_clock):
    seen = []

    class Sink:
        @hookimpl
        def hookline_call_ended(self, runtime, record):
            seen.append((runtime, record.end_reason))

    stt = ScriptedSTT()
    runtime = await scripted_runtime(stt=stt, plugins=[Sink()])
    await run_call(runtime, ScriptedLeg(call_info(), [WaitForAgent(), HangUpStep()], stt))
    assert seen == [(runtime, "caller_hangup")]

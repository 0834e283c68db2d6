"""The real provider inside the call engine: the runtime builds it from config through the
plugin's factory, and the fake OpenAI server answers; telephony, STT and TTS are scripted.

Real time (the fake's sockets are real, so trio's MockClock would jump into our timeouts
while loopback I/O is in flight); the scripted caller and TTS are sped up instead: short
words, quick endpointing, fast speech.
"""

from __future__ import annotations

import json
import threading

import msgspec
import openai
import trio

import hookline_llm_openai
from hookline.config import Secrets
from hookline.events import AgentSpoke, BargeIn, CallEvent, ProviderFailed, UsageReported
from hookline.hookspecs import hookimpl
from hookline.runtime import Runtime
from hookline.testing.harness import ScriptedTelephony, make_config, run_call, scripted_plugins
from hookline.testing.scripted import (
    HangUpStep,
    Pause,
    Say,
    ScriptedLeg,
    ScriptedSTT,
    ScriptedTTS,
    WaitForAgent,
    call_info,
)
from hookline.tools import ToolContext, ToolSet, tool
from hookline_testkit.fake_openai import (
    FakeOpenAI,
    Reply,
    Script,
    call,
    dropped_connection,
    malformed_chunk,
    mid_stream_error,
    rate_limited,
    server_error,
    stall,
    text,
    tool_calls,
    unauthorized,
)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, CallEvent]] = []

    @hookimpl
    def hookline_call_event(self, call, event):
        self.events.append((call.call_id, event))

    def of(self, kind, call_id: str | None = None):
        return [e for c, e in self.events if isinstance(e, kind) and call_id in (None, c)]


class Plate(msgspec.Struct):
    plate: str


@tool
async def car_status(params: Plate, ctx: ToolContext) -> dict:
    """Whether the caller's car is ready, by licence plate."""
    return {"plate": params.plate, "status": "ready"}


class ShopTools:
    __name__ = "shop_tools"

    @hookimpl
    def hookline_toolsets(self):
        return [ToolSet(name="shop", create=lambda settings, runtime: [car_status])]


WORD_S = 0.08  # seconds a scripted word takes to say


def leg(stt: ScriptedSTT, script: list) -> ScriptedLeg:
    return ScriptedLeg(call_info(), script, stt, word_s=WORD_S)


async def build(
    fake: FakeOpenAI, recorder: Recorder, *, chars_per_s: float = 300, **llm: object
) -> tuple[Runtime, ScriptedSTT]:
    settings = {"base_url": fake.url, "max_retry_wait_s": 1.0, "first_token_timeout_s": 2.0}
    config = make_config(
        agent={"greeting": "Riverside Auto, hi."},
        providers={"llm": "openai", "tools": ["builtin", "shop"]},
        llm={"openai": {**settings, **llm}},
    )
    stt = ScriptedSTT(word_s=WORD_S, endpointing_s=0.15, utterance_end_s=0.5)
    runtime = Runtime(
        config,
        scripted_plugins([hookline_llm_openai, ShopTools(), recorder]),
        secrets=Secrets({"OPENAI_API_KEY": fake.api_key}),
        providers={
            "telephony": ScriptedTelephony(),
            "stt": stt,
            "tts": ScriptedTTS(ttfb_s=0.02, chars_per_s=chars_per_s),
        },
    )
    await runtime.start()
    return runtime, stt


async def one_question(runtime: Runtime, stt: ScriptedSTT, question: str = "When do you open"):
    script = [WaitForAgent(), Say(question), WaitForAgent(), HangUpStep()]
    try:
        return await run_call(runtime, leg(stt, script))
    finally:
        await runtime.llm.aclose()


async def test_text_streams_into_spoken_sentences(openai_fake: FakeOpenAI) -> None:
    answer = "We open at eight tomorrow. The shop is on Main Street. See you then!"
    openai_fake.script(text(answer, tokens_per_s=40, prompt_tokens=90, cached_tokens=64))
    recorder = Recorder()
    runtime, stt = await build(openai_fake, recorder)
    record = await one_question(runtime, stt)

    assert record.end_reason == "caller_hangup"
    agent = record.turns[2]
    assert agent.text == answer and agent.heard_text == answer
    spoken = [e.text for e in recorder.of(AgentSpoke) if e.turn == agent_turn_index(recorder)]
    assert spoken == [
        "We open at eight tomorrow.",
        "The shop is on Main Street.",
        "See you then!",
    ]
    (usage,) = [u for u in recorder.of(UsageReported) if u.provider == "llm/openai"]
    assert (usage.prompt_tokens, usage.cached_tokens) == (90, 64)
    assert usage.completion_tokens > 10
    # The request carried the configured instructions and the caller's words.
    sent = openai_fake.chats[0].chat
    assert sent is not None
    assert sent.messages[0].role == "system"
    assert sent.messages[-1].content == "When do you open"
    assert {t.function.name for t in sent.tools} >= {"car_status"}


def agent_turn_index(recorder: Recorder) -> int:
    turns = sorted({e.turn for e in recorder.of(AgentSpoke)})
    return turns[-1]


async def test_tool_round_trip_through_the_engine(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(
        tool_calls(call("car_status", json.dumps({"plate": "ABC123"}), id="call_9"), fragment=2),
        text("Good news: your car is ready."),
    )
    recorder = Recorder()
    runtime, stt = await build(openai_fake, recorder)
    record = await one_question(runtime, stt, "Is my car ready plate ABC123")

    assert record.turns[2].text == "Good news: your car is ready."
    calls = [c for t in record.turns for c in t.tool_calls]
    assert [(c.tool, c.arguments, c.ok) for c in calls] == [
        ("car_status", '{"plate": "ABC123"}', True)
    ]
    second = openai_fake.chats[1].chat
    assert second is not None
    assistant, result = second.messages[-2], second.messages[-1]
    assert assistant.tool_calls is not None and assistant.tool_calls[0].id == "call_9"
    assert result.role == "tool" and result.tool_call_id == "call_9"
    # stdlib json on purpose: the history must be plain JSON to any reader, not just msgspec.
    assert json.loads(result.content) == {"plate": "ABC123", "status": "ready"}


# Each fault, what the fake answers, and what the recorded reason must mention.
FAULTS: dict[str, tuple[Script, str]] = {
    "rate limited": (rate_limited(retry_after=5), "429"),
    "server error": (server_error(500), "500"),
    "error mid stream": (mid_stream_error(after=0, message="overloaded"), "overloaded"),
    "malformed chunk": (malformed_chunk(after=0), "malformed chunk"),
    "dropped connection": (dropped_connection(after=0), "connection lost"),
    "no first token": (stall(after=0), "first token"),
}


async def test_each_fault_speaks_the_fallback_and_records_why(openai_fake: FakeOpenAI) -> None:
    """One call per fault, all at once on one runtime; the fake answers each call by the
    fault its caller names (so retries of a call get the same fault again)."""
    openai_fake.responder = lambda req: FAULTS[req.chat.messages[-1].content][0]
    recorder = Recorder()
    runtime, stt = await build(
        openai_fake, recorder, first_token_timeout_s=1.5, max_retry_wait_s=1.0
    )
    records = {}

    async def one(fault: str) -> None:
        script = [WaitForAgent(), Say(fault), WaitForAgent(), HangUpStep()]
        records[fault] = await run_call(runtime, leg(stt, script))

    try:
        async with trio.open_nursery() as nursery:
            for fault in FAULTS:
                nursery.start_soon(one, fault)
    finally:
        await runtime.llm.aclose()

    for fault, (_, reason) in FAULTS.items():
        record = records[fault]
        assert record.end_reason == "caller_hangup", fault  # the call goes on
        # The fallback line, after a filler when the fault took longer than the engine's
        # first-token deadline (policy.llm_filler_after_s).
        agent = runtime.config.agent
        text = record.turns[2].text
        assert text.endswith(agent.fallback_line), fault
        assert text.removesuffix(agent.fallback_line).strip() in ("", *agent.fillers), fault
        (failed,) = recorder.of(ProviderFailed, record.call_id)
        assert failed.provider == "llm/openai" and not failed.fatal, fault
        assert reason in failed.error, (fault, failed.error)
    # The 5xx was retried within the budget; the 429's retry-after was beyond it.
    asked = [r.chat.messages[-1].content for r in openai_fake.chats]
    assert asked.count("server error") == 2
    assert asked.count("rate limited") == 1


async def test_fault_after_some_speech_keeps_what_was_said(openai_fake: FakeOpenAI) -> None:
    # The first sentence was spoken before the stream broke; then the fallback line.
    openai_fake.script(
        Reply(text="Sure thing. Let me look that up for you.", fault="drop", fault_after=5)
    )
    recorder = Recorder()
    runtime, stt = await build(openai_fake, recorder)
    record = await one_question(runtime, stt)
    agent_texts = [t.text for t in record.turns if t.role == "agent"]
    assert any(t.startswith("Sure thing.") for t in agent_texts)
    assert agent_texts[-1].endswith(runtime.config.agent.fallback_line)
    assert len(recorder.of(ProviderFailed)) == 1


async def test_401_ends_the_call_with_an_apology(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(unauthorized())
    recorder = Recorder()
    runtime, stt = await build(openai_fake, recorder)
    record = await one_question(runtime, stt)
    assert record.end_reason == "provider_failed:llm/openai"
    assert record.turns[-1].text.endswith(runtime.config.agent.apology)
    (failed,) = recorder.of(ProviderFailed)
    assert failed.fatal and "OPENAI_API_KEY" in failed.error


async def test_barge_in_closes_the_http_stream(openai_fake: FakeOpenAI) -> None:
    long_answer = (
        "Sure. We have openings on Monday. We also have Tuesday at nine. "
        "Wednesday is wide open. Thursday afternoon works too. Friday is full."
    )
    openai_fake.script(text(long_answer, tokens_per_s=20), text("Tuesday at nine it is."))
    recorder = Recorder()
    # Slow speech, so that the agent is still talking when the caller cuts in.
    runtime, stt = await build(openai_fake, recorder, chars_per_s=50)
    script = [WaitForAgent(), Say("When can you fit me in"), Pause(1.1)]
    script += [Say("Tuesday at nine please"), WaitForAgent(), HangUpStep()]
    try:
        record = await run_call(runtime, leg(stt, script))
    finally:
        await runtime.llm.aclose()
    assert recorder.of(BargeIn)
    first = openai_fake.chats[0]
    assert first.disconnected.is_set() and not first.completed.is_set()
    assert record.turns[-1].text == "Tuesday at nine it is."
    # The interrupted answer entered the history only as far as it was heard.
    second = openai_fake.chats[1].chat
    assert second is not None
    heard = [m.content for m in second.messages if m.role == "assistant"][-1]
    assert heard is not None and long_answer.startswith(heard) and heard != long_answer


async def test_the_client_is_built_at_start_up_off_the_trio_thread(
    openai_fake: FakeOpenAI, monkeypatch
) -> None:
    """Building an AsyncOpenAI blocks (a TLS context; the SDK's HTTP stack imported the
    first time): `runtime.start()` builds it in a worker thread, so the first call's
    response constructs nothing on the trio thread while other calls wait."""
    built_on: list[int] = []

    class Recording(openai.AsyncOpenAI):
        def __init__(self, *args: object, **kwargs: object) -> None:
            built_on.append(threading.get_ident())
            super().__init__(*args, **kwargs)

    class Refusing(openai.AsyncOpenAI):
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("an OpenAI client was built during a call")

    monkeypatch.setattr(openai, "AsyncOpenAI", Recording)
    openai_fake.script(text("We open at eight."))
    recorder = Recorder()
    runtime, stt = await build(openai_fake, recorder)
    assert len(built_on) == 1 and built_on[0] != threading.get_ident()

    monkeypatch.setattr(openai, "AsyncOpenAI", Refusing)
    record = await one_question(runtime, stt)
    assert record.turns[2].text == "We open at eight."
    assert not recorder.of(ProviderFailed)
    assert len(openai_fake.chats) == 1

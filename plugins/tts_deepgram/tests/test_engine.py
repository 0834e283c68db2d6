"""The real Deepgram TTS provider inside the call engine, scripted STT/LLM/caller."""

from __future__ import annotations

from tts_deepgram_helpers import make_tts

from hookline.testing.harness import run_call, scripted_runtime
from hookline.testing.scripted import (
    HangUpStep,
    Pause,
    Say,
    ScriptedLeg,
    ScriptedLLM,
    ScriptedSTT,
    WaitForAgent,
    call_info,
)
from hookline_testkit.fake_deepgram_tts import FakeDeepgramTTS


async def test_two_calls_synthesize_each_cached_phrase_once_and_stream_answers(
    fake_deepgram_tts: FakeDeepgramTTS,
) -> None:
    fake = fake_deepgram_tts
    fake.chars_per_second = 400.0  # short audio: the scripted caller hears it in real time
    stt = ScriptedSTT()
    llm = ScriptedLLM(["Sure. What day works for you?", "Great. See you Friday."])
    runtime = await scripted_runtime(stt=stt, llm=llm, tts=make_tts(fake))
    agent = runtime.config.agent
    phrases = {
        agent.greeting, agent.goodbye, agent.reprompt, agent.apology,
        agent.fallback_line, agent.transfer_announcement, *agent.fillers,
    }  # fmt: skip
    assert sorted(fake.rest_texts) == sorted(phrases)  # cached at start-up

    records = []
    for words in ("I need an oil change", "Friday please"):
        script = [WaitForAgent(), Say(words, seconds=0.3), WaitForAgent(), HangUpStep()]
        leg = ScriptedLeg(call_info(), script, stt)
        records.append(await run_call(runtime, leg))
        # The caller heard the cached greeting and the streamed answer.
        greeting = fake.audio_for(agent.greeting)
        assert leg.played_bytes >= len(greeting)

    # Synthesized once per process: two calls added no REST request.
    assert sorted(fake.rest_texts) == sorted(phrases)
    assert len(fake.rest_requests) == len(phrases)
    for record in records:
        assert record.end_reason == "caller_hangup"
    assert [t.text for t in records[0].turns if t.role == "agent"][1] == (
        "Sure. What day works for you?"
    )
    # Each call streamed its answer over its own socket, sentence by sentence.
    assert len(fake.connections) == 2
    said = [" ".join(t.strip() for t in conn.flushes) for conn in fake.connections]
    assert said == ["Sure. What day works for you?", "Great. See you Friday."]
    for conn in fake.connections:
        assert conn.closed_by_client


async def test_barge_in_clears_the_deepgram_stream_and_the_next_answer_plays(
    fake_deepgram_tts: FakeDeepgramTTS,
) -> None:
    fake = fake_deepgram_tts
    fake.chars_per_second = 25.0  # ~2 s per sentence: the caller interrupts the first ones
    stt = ScriptedSTT()
    long_answer = (
        "We have openings on Monday morning. We also have Tuesday at nine. "
        "Wednesday is wide open all day. Thursday afternoon works too."
    )
    llm = ScriptedLLM([long_answer, "Sure."])
    runtime = await scripted_runtime(stt=stt, llm=llm, tts=make_tts(fake))
    script = [WaitForAgent(), Say("When can you fit me in", seconds=0.4), Pause(1.0)]
    script += [Say("Tuesday please", seconds=0.4), WaitForAgent(), HangUpStep()]
    leg = ScriptedLeg(call_info(), script, stt)
    record = await run_call(runtime, leg)

    interrupted = record.turns[2]
    assert interrupted.interrupted and interrupted.heard_text != interrupted.text
    [conn] = fake.connections
    assert conn.clears >= 1  # the barge-in reached Deepgram as a Clear
    # After the clear only the next answer was synthesized, and the caller heard it.
    assert conn.flushes[-1].strip() == "Sure."
    assert [t.text for t in record.turns if t.role == "agent"][-1] == "Sure."
    assert leg.received and leg.received[-1].t > leg.clears[0]

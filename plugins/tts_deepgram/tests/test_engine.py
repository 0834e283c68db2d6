"""The real Deepgram TTS provider inside the call engine, scripted STT/LLM/caller."""

from __future__ import annotations

from hookline.testing.fake_deepgram_tts import FakeDeepgramTTS
from hookline.testing.harness import run_call, scripted_runtime
from hookline.testing.scripted import (
    HangUpStep,
    Say,
    ScriptedLeg,
    ScriptedLLM,
    ScriptedSTT,
    WaitForAgent,
    call_info,
)
from tts_deepgram_helpers import make_tts


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

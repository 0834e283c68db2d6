"""The real STT provider inside the call engine: the runtime builds it from config through
the plugin's factory and the loopback fake transcribes; telephony, LLM and TTS are scripted.

Time is trio's MockClock with a small autojump threshold: the fake runs in the same trio
run and works on the audio clock, so only loopback I/O is real.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

import hookline_stt_deepgram
from hookline.config import Secrets
from hookline.events import CallEvent, UserSpeechStarted, UserTurnEnded
from hookline.hookspecs import hookimpl
from hookline.runtime import Runtime
from hookline.testing.harness import ScriptedTelephony, make_config, run_call, scripted_plugins
from hookline.testing.scripted import (
    HangUpStep,
    Say,
    ScriptedLeg,
    ScriptedLLM,
    ScriptedTTS,
    WaitForAgent,
    call_info,
)
from hookline_stt_deepgram import DeepgramSTT
from hookline_testkit.fake_deepgram_stt import FakeDeepgramSTT, fake_deepgram_stt


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.01)


class Recorder:
    def __init__(self) -> None:
        self.events: list[CallEvent] = []

    @hookimpl
    def hookline_call_event(self, call, event):
        self.events.append(event)


async def build(fake: FakeDeepgramSTT, recorder: Recorder, llm: ScriptedLLM) -> Runtime:
    config = make_config(
        providers={"stt": "deepgram"},
        stt={"deepgram": {"url": fake.url}},
    )
    runtime = Runtime(
        config,
        scripted_plugins([hookline_stt_deepgram, recorder]),
        secrets=Secrets({"DEEPGRAM_API_KEY": fake.api_key}),
        providers={
            "telephony": ScriptedTelephony(),
            "llm": llm,
            "tts": ScriptedTTS(chars_per_s=60),
        },
    )
    await runtime.start()
    return runtime


async def test_turns_come_from_deepgram_through_the_engine(clock) -> None:
    async with fake_deepgram_stt() as fake:
        recorder = Recorder()
        llm = ScriptedLLM(["Sure. What day works for you?", "Great, see you then."])
        runtime = await build(fake, recorder, llm)
        assert isinstance(runtime.stt, DeepgramSTT)
        info = call_info()
        script = [
            WaitForAgent(),
            Say("I need an oil change"),
            WaitForAgent(),
            Say("Tuesday morning"),
            WaitForAgent(),
            HangUpStep(),
        ]
        leg = ScriptedLeg(info, script, fake)  # the leg tells the fake what it "says"
        record = await run_call(runtime, leg)

    assert record.end_reason == "caller_hangup"
    user = [t.text for t in record.turns if t.role == "user"]
    assert user == ["I need an oil change", "Tuesday morning"]
    assert [m.content for m in llm.requests[0] if m.role == "user"] == ["I need an oil change"]
    ended = [e for e in recorder.events if isinstance(e, UserTurnEnded)]
    assert [e.reason for e in ended] == ["speech_final", "speech_final"]
    assert sum(isinstance(e, UserSpeechStarted) for e in recorder.events) == 2
    # The engine maps call-audio times back to its clock: speech ended when the caller
    # stopped "speaking" (the leg's record), not when the final arrived.
    for event, (_, said_end, _) in zip(ended, leg.said_at, strict=True):
        assert event.speech_end == pytest.approx(said_end, abs=0.05)
    [conn] = fake.connections
    assert conn.call_id == info.call_id
    assert conn.controls[-1] == "CloseStream" and conn.close_code == 1000


async def test_a_drop_mid_utterance_loses_nothing_in_the_engine(clock) -> None:
    async with fake_deepgram_stt() as fake:
        fake.drop_next(at_utterance=1)  # right after the first interim
        recorder = Recorder()
        runtime = await build(fake, recorder, ScriptedLLM(["Sure, which day?"]))
        info = call_info()
        script = [WaitForAgent(), Say("I need new brake pads"), WaitForAgent(), HangUpStep()]
        leg = ScriptedLeg(info, script, fake)
        record = await run_call(runtime, leg)

    assert record.end_reason == "caller_hangup"
    assert [t.text for t in record.turns if t.role == "user"] == ["I need new brake pads"]
    [ended] = [e for e in recorder.events if isinstance(e, UserTurnEnded)]
    assert ended.speech_end == pytest.approx(leg.said_at[0][1], abs=0.05)
    assert sum(isinstance(e, UserSpeechStarted) for e in recorder.events) == 1
    first, second = fake.connections
    assert first.dropped and second.call_id == info.call_id

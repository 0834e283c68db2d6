"""Telephony failures in every background task are recorded as telephony failures, and a
drained call that outlives its goodbye is recorded as a shutdown (issue 11). Scripted
providers on trio's MockClock."""

from __future__ import annotations

import logging

import trio

from hookline import ProviderUnavailable
from hookline.events import ProviderFailed
from hookline.testing.harness import make_config, run_call, scripted_runtime
from hookline.testing.scripted import (
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

from .test_call import Recorder


class BrokenLeg(ScriptedLeg):
    """A leg whose telephony API fails: hang-up, transfer, or every play after `plays`."""

    def __init__(self, *args, fail: str, plays: int = 1, **kw) -> None:
        super().__init__(*args, **kw)
        self.fail = fail
        self.plays_left = plays

    async def hangup(self) -> None:
        if self.fail == "hangup":
            raise ProviderUnavailable("503 from the REST API", provider="telephony/scripted")
        await super().hangup()

    async def transfer(self, number: str) -> None:
        if self.fail == "transfer":
            raise ProviderUnavailable("503 from the REST API", provider="telephony/scripted")
        await super().transfer(number)

    async def play(self, audio: bytes) -> None:
        if self.fail == "play":
            if self.plays_left == 0:
                raise ProviderUnavailable("the media socket broke", provider="telephony/scripted")
            self.plays_left -= 1
        await super().play(audio)


def _no_tracebacks(caplog) -> None:
    crashes = [r for r in caplog.records if r.exc_info]
    assert not crashes, [r.getMessage() for r in crashes]


async def test_hangup_failure_is_a_telephony_failure_not_a_crash(autojump_clock, caplog):
    caplog.set_level(logging.INFO, logger="hookline")
    stt, recorder = ScriptedSTT(), Recorder()
    llm = ScriptedLLM([Reply(tool_calls=[("end_call", '{"goodbye": "Bye now!"}')])])
    runtime = await scripted_runtime(stt=stt, llm=llm, plugins=[recorder])
    leg = BrokenLeg(call_info(), [WaitForAgent(), Say("That's all"), Pause(30)], stt, fail="hangup")
    record = await run_call(runtime, leg)
    assert record.end_reason == "agent_hangup"  # the first reason stays
    (failed,) = recorder.of(ProviderFailed)
    assert failed.provider == "telephony/scripted" and failed.fatal
    _no_tracebacks(caplog)
    assert runtime.active_calls == 0


async def test_dtmf_transfer_failure_is_a_telephony_failure(autojump_clock, caplog):
    caplog.set_level(logging.INFO, logger="hookline")
    stt = ScriptedSTT()
    config = make_config(agent={"transfer_number": "+15550001111", "transfer_digit": "0"})
    runtime = await scripted_runtime(config, stt=stt)
    leg = BrokenLeg(call_info(), [WaitForAgent(), Press("0"), Pause(20)], stt, fail="transfer")
    record = await run_call(runtime, leg)
    assert record.end_reason == "provider_failed:telephony/scripted"
    _no_tracebacks(caplog)


async def test_reprompt_on_a_broken_leg_is_a_telephony_failure(autojump_clock, caplog):
    caplog.set_level(logging.INFO, logger="hookline")
    stt = ScriptedSTT()
    runtime = await scripted_runtime(make_config(policy={"silence_reprompt_s": 3}), stt=stt)
    # The greeting plays; the silence reprompt meets a broken media socket.
    leg = BrokenLeg(call_info(), [], stt, fail="play", plays=1, after_script=30)
    record = await run_call(runtime, leg)
    assert record.end_reason == "provider_failed:telephony/scripted"
    _no_tracebacks(caplog)
    assert runtime.active_calls == 0


async def test_drained_call_whose_goodbye_is_too_long_is_a_shutdown(autojump_clock):
    stt, recorder = ScriptedSTT(), Recorder()
    # A goodbye of about 60 s: longer than the drain waits (apology_timeout_s + 2).
    tts = ScriptedTTS(chars_per_s=0.5)
    runtime = await scripted_runtime(stt=stt, tts=tts, plugins=[recorder])
    leg = ScriptedLeg(call_info(), [WaitForAgent(timeout=300), Say("Hello"), Pause(600)], stt)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_call, runtime, leg)
        await trio.sleep(200)
        await runtime.drain(grace_s=1)
    # The runtime cancelled the call before its goodbye ended: still a shutdown.
    (record,) = recorder.ended
    assert record.end_reason == "shutdown"
    assert runtime.active_calls == 0

"""The conformance suites hold for the scripted providers (and so check the suites)."""

from __future__ import annotations

import pytest

from hookline.testing.conformance import (
    CallLegConformance,
    LLMConformance,
    STTConformance,
    TTSConformance,
)
from hookline.testing.scripted import (
    Reply,
    ScriptedLeg,
    ScriptedLLM,
    ScriptedSTT,
    ScriptedTTS,
    call_info,
)


class TestScriptedSTT(STTConformance):
    @pytest.fixture
    def stt(self):
        return ScriptedSTT()

    @pytest.fixture
    def expect(self, stt):
        return stt.expect


class TestScriptedSTTWithLateFinals(TestScriptedSTT):
    """Finals that arrive late must not outlive the stream (send after close is a no-op)."""

    @pytest.fixture
    def stt(self):
        return ScriptedSTT(final_delay_s=0.05)


class TestScriptedLLM(LLMConformance):
    @pytest.fixture
    def llm(self):
        return ScriptedLLM()

    @pytest.fixture
    def reply(self, llm):
        def queue(text="", tool_calls=()):
            llm.replies.append(Reply(text=text, tool_calls=tool_calls, first_token_s=0.01))

        return queue


class TestScriptedTTS(TTSConformance):
    @pytest.fixture
    def tts(self):
        return ScriptedTTS(ttfb_s=0.01)


class TestScriptedLeg(CallLegConformance):
    """On trio's MockClock: the leg plays our audio back in (virtual) real time."""

    @pytest.fixture(autouse=True)
    def _clock(self, autojump_clock):
        return autojump_clock

    @pytest.fixture
    async def leg(self):
        # A caller who stays silent on the line for an hour unless told to hang up.
        leg = ScriptedLeg(call_info(), [], after_script=3600)
        async with leg.running():
            yield leg

    @pytest.fixture
    def hang_up_caller(self, leg):
        async def hang_up():
            leg.caller_hangs_up()

        return hang_up

"""The conformance suites hold for the scripted providers (and so check the suites)."""

from __future__ import annotations

import pytest

from hookline.testing.conformance import LLMConformance, STTConformance, TTSConformance
from hookline.testing.scripted import Reply, ScriptedLLM, ScriptedSTT, ScriptedTTS


class TestScriptedSTT(STTConformance):
    @pytest.fixture
    def stt(self):
        return ScriptedSTT()

    @pytest.fixture
    def expect(self, stt):
        return stt.expect


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

"""Conformance suites: what every provider of a kind must do, whoever wrote it.

Subclass the suite for your kind in a test module (the class name must start with
`Test`) and provide its fixtures; pytest then runs every check against your provider:

    class TestMySTT(STTConformance):
        @pytest.fixture
        async def stt(self, my_fake):
            return MySTT(url=my_fake.url, ...)

        @pytest.fixture
        def expect(self, my_fake):
            return my_fake.expect          # (call_id, text): the next utterance's words

The suites talk to the provider only through hookline's Protocols, so they hold for
scripted providers, loopback fakes and (with keys) the real services alike.
"""

from .leg import CallLegConformance
from .llm import LLMConformance
from .stt import STTConformance
from .tools import ToolSetConformance
from .tts import TTSConformance

__all__ = [
    "CallLegConformance",
    "LLMConformance",
    "STTConformance",
    "TTSConformance",
    "ToolSetConformance",
]

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

Every suite names its fixtures the same way:

- what is tested is named after its kind: `stt`, `llm`, `tts`, `leg`, `toolset` (and
  `tools`, the tools that set built);
- what the far end is told to do next is a callable named for that act: `expect`
  (STT: the next utterance's words), `reply` (LLM: the next answer), `hang_up_caller`
  (telephony);
- data the suite needs from you is a noun: `tool_args`, `side_effect_tools`,
  `refused_tool_args`;
- `wait_s` (optional, every suite but the tool sets) bounds each wait, in seconds.

| suite                | provide                                                 |
|----------------------|---------------------------------------------------------|
| `STTConformance`     | `stt`, `expect`                                         |
| `LLMConformance`     | `llm`, `reply`                                          |
| `TTSConformance`     | `tts`                                                   |
| `CallLegConformance` | `leg`, `hang_up_caller`                                 |
| `ToolSetConformance` | `toolset`, `tools`, `tool_args`, `side_effect_tools`    |
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

"""What every plugin author tests with, vendor-neutral: scripted in-process providers
(`scripted`), a harness that runs scripted calls through the real engine (`harness`) and
the conformance suites of each provider kind (`hookline.testing.conformance`, which needs
pytest and pytest-trio: `pip install 'hookline[testing]'`).

The loopback fakes of real vendors (Twilio, Deepgram, OpenAI, Google Calendar), their
pytest fixtures and the demo live in the separate test kit: `pip install hookline-testkit`.
"""

from .harness import ScriptedTelephony, make_config, run_call, scripted_plugins, scripted_runtime
from .scripted import (
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

__all__ = [
    "HangUpStep",
    "Pause",
    "Press",
    "Reply",
    "Say",
    "ScriptedLLM",
    "ScriptedLeg",
    "ScriptedSTT",
    "ScriptedTTS",
    "ScriptedTelephony",
    "WaitForAgent",
    "call_info",
    "make_config",
    "run_call",
    "scripted_plugins",
    "scripted_runtime",
]

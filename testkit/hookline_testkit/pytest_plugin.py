"""pytest plugin (entry point `pytest11`): fixtures for testing hookline and its plugins.

Scripted providers come fresh per test; the loopback fakes of each real service are
fixtures too (see the `fixtures_*` modules). Use pytest-trio's `autojump_clock` fixture
for tests that involve no real socket.
"""

from __future__ import annotations

import pytest

from hookline.testing.scripted import ScriptedLLM, ScriptedSTT, ScriptedTTS


@pytest.fixture
def scripted_stt() -> ScriptedSTT:
    return ScriptedSTT()


@pytest.fixture
def scripted_llm() -> ScriptedLLM:
    return ScriptedLLM()


@pytest.fixture
def scripted_tts() -> ScriptedTTS:
    return ScriptedTTS()


# The loopback fakes of the real services, one module each (see those modules).
from .fixtures_calendar import google_calendar_fake  # noqa: E402
from .fixtures_deepgram_stt import deepgram_stt_env, fake_deepgram_stt  # noqa: E402
from .fixtures_deepgram_tts import fake_deepgram_tts  # noqa: E402
from .fixtures_openai import openai_fake  # noqa: E402
from .fixtures_postgres import postgres_server, postgres_url  # noqa: E402
from .fixtures_twilio import (  # noqa: E402
    twilio_auth_token,
    twilio_rest,
    twilio_secrets,
    twilio_sim,
)
from .tls_probe import tls_context_builds  # noqa: E402

__all__ = [
    "deepgram_stt_env",
    "fake_deepgram_stt",
    "fake_deepgram_tts",
    "google_calendar_fake",
    "openai_fake",
    "postgres_server",
    "postgres_url",
    "scripted_llm",
    "scripted_stt",
    "scripted_tts",
    "tls_context_builds",
    "twilio_auth_token",
    "twilio_rest",
    "twilio_secrets",
    "twilio_sim",
]

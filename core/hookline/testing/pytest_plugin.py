"""pytest plugin (entry point `pytest11`): fixtures for testing hookline and its plugins.

Scripted providers come fresh per test; the loopback fakes of each real service are
fixtures too (see the `fixtures_*` modules). Use pytest-trio's `autojump_clock` fixture
for tests that involve no real socket.
"""

from __future__ import annotations

import pytest

from .scripted import ScriptedLLM, ScriptedSTT, ScriptedTTS


@pytest.fixture
def scripted_stt() -> ScriptedSTT:
    return ScriptedSTT()


@pytest.fixture
def scripted_llm() -> ScriptedLLM:
    return ScriptedLLM()


@pytest.fixture
def scripted_tts() -> ScriptedTTS:
    return ScriptedTTS()

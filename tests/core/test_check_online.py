"""`hookline check --online` asks each provider that can to verify its credentials."""

from __future__ import annotations

import textwrap

import pytest

from hookline.commands import verify_online
from hookline.config import load_config
from hookline.errors import ProviderAuthError
from hookline.plugins import discover


def config_for(tmp_path, openai_url: str):
    path = tmp_path / "agent.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [agent]
            name = "Shop"
            [providers]
            telephony = "twilio"
            stt = "deepgram"
            llm = "openai"
            tts = "deepgram"
            [llm.openai]
            base_url = "{openai_url}"
            [analytics]
            enabled = false
            """
        )
    )
    return load_config(path)


@pytest.fixture
def secrets_env(monkeypatch):
    for name in ("TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID", "DEEPGRAM_API_KEY"):
        monkeypatch.setenv(name, "x")


async def test_online_check_accepts_a_good_key(tmp_path, openai_fake, secrets_env, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", openai_fake.api_key)
    await verify_online(config_for(tmp_path, openai_fake.url), discover())
    assert any(r.path.endswith("/models") for r in openai_fake.requests)


async def test_online_check_names_the_variable_of_a_refused_key(
    tmp_path, openai_fake, secrets_env, monkeypatch
):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    with pytest.raises(ProviderAuthError, match="OPENAI_API_KEY"):
        await verify_online(config_for(tmp_path, openai_fake.url), discover())

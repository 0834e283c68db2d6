"""The plugin as a deployer meets it: discovery, settings, secrets."""

from __future__ import annotations

import msgspec
import pytest

from hookline.config import Config, Secrets, decode_section
from hookline.errors import ConfigError, MissingSecret
from hookline.plugins import discover
from hookline.runtime import Runtime
from hookline.testing.harness import make_config, scripted_plugins
from hookline_tts_deepgram import DeepgramTTS, DeepgramTTSSettings
from hookline_tts_deepgram import hookline_providers as tts_deepgram_providers


def test_discovered_through_its_entry_point() -> None:
    plugins = discover()
    spec = plugins.provider("tts", "deepgram")
    assert spec is not None
    assert spec.settings is DeepgramTTSSettings


def test_phone_defaults() -> None:
    settings = DeepgramTTSSettings()
    assert (settings.model, settings.encoding, settings.sample_rate) == (
        "aura-2-thalia-en",
        "mulaw",
        8000,
    )
    assert settings.api_key_env == "DEEPGRAM_API_KEY"
    assert settings.flush_budget < 20  # Deepgram's limit per 60 s


def test_unknown_setting_is_a_clear_config_error() -> None:
    config = msgspec.convert(
        {"agent": {}, "providers": {"telephony": "t", "stt": "s", "llm": "l", "tts": "deepgram"}},
        Config,
    )
    config.path = "agent.toml"
    with pytest.raises(ConfigError) as info:
        decode_section(config, "tts.deepgram", {"voice": "x"}, DeepgramTTSSettings)
    assert str(info.value).startswith("agent.toml: tts.deepgram.voice: unknown key 'voice'")


class _ThisPlugin:
    hookline_providers = staticmethod(tts_deepgram_providers)


def _config_using_deepgram() -> Config:
    config = make_config(providers={"tts": "deepgram"})
    config.tts = {"deepgram": {"model": "aura-2-asteria-en"}}
    return config


def test_runtime_builds_it_with_the_key_from_the_environment() -> None:
    plugins = scripted_plugins([_ThisPlugin()])
    runtime = Runtime(_config_using_deepgram(), plugins, secrets=Secrets({"DEEPGRAM_API_KEY": "k"}))
    assert isinstance(runtime.tts, DeepgramTTS)
    assert runtime.tts.settings.model == "aura-2-asteria-en"


def test_missing_key_names_the_env_var() -> None:
    plugins = scripted_plugins([_ThisPlugin()])
    with pytest.raises(MissingSecret) as info:
        Runtime(_config_using_deepgram(), plugins, secrets=Secrets({}))
    assert info.value.env_var == "DEEPGRAM_API_KEY"
    assert "tts.deepgram.api_key_env" in str(info.value)

"""The plugin as a deployer meets it: discovery, its config section, its secret."""

from __future__ import annotations

import importlib.metadata

import pytest

import hookline_llm_openai
from hookline.config import Secrets, decode_section
from hookline.errors import ConfigError, MissingSecret
from hookline.plugins import discover
from hookline.runtime import Runtime
from hookline.testing.harness import ScriptedTelephony, make_config, scripted_plugins
from hookline.testing.scripted import ScriptedSTT, ScriptedTTS
from hookline_llm_openai import OpenAILLM, OpenAISettings


def test_found_through_its_entry_point() -> None:
    (ep,) = [e for e in importlib.metadata.entry_points(group="hookline") if e.name == "llm_openai"]
    plugins = discover([ep])
    assert not plugins.failed
    spec = plugins.provider("llm", "openai")
    assert spec is not None and spec.settings is OpenAISettings
    assert ep.dist is not None and ep.dist.name == "hookline-llm-openai"


def test_defaults() -> None:
    s = OpenAISettings()
    assert (s.model, s.api_key_env, s.base_url) == ("gpt-4o", "OPENAI_API_KEY", None)


@pytest.mark.parametrize(
    ("section", "key", "says"),
    [
        ({"modle": "gpt-4o"}, "llm.openai.modle", "unknown key"),
        ({"temperature": 3}, "llm.openai.temperature", "<= 2"),
        ({"total_timeout_s": 0}, "llm.openai.total_timeout_s", "> 0"),
        ({"max_tokens_param": "max"}, "llm.openai.max_tokens_param", "invalid enum value"),
    ],
)
def test_bad_settings_name_the_key(section: dict, key: str, says: str) -> None:
    config = make_config()
    config.path = "shop.toml"
    with pytest.raises(ConfigError) as info:
        decode_section(config, "llm.openai", section, OpenAISettings)
    assert info.value.key == key and info.value.file == "shop.toml"
    assert says in str(info.value)


def runtime_with(secrets: dict[str, str], **section: object) -> Runtime:
    config = make_config(providers={"llm": "openai"}, llm={"openai": section})
    return Runtime(
        config,
        scripted_plugins([hookline_llm_openai]),
        secrets=Secrets(secrets),
        providers={"telephony": ScriptedTelephony(), "stt": ScriptedSTT(), "tts": ScriptedTTS()},
    )


def test_factory_reads_the_key_from_the_named_env_var() -> None:
    runtime = runtime_with({"SHOP_KEY": "sk-123"}, api_key_env="SHOP_KEY")
    llm = runtime.llm
    assert isinstance(llm, OpenAILLM)
    # No first-token timeout of its own: the policy's applies.
    assert llm.first_token_timeout_s == runtime.config.policy.llm_first_token_timeout_s


def test_missing_key_is_a_clear_error() -> None:
    with pytest.raises(MissingSecret) as info:
        runtime_with({})
    assert info.value.env_var == "OPENAI_API_KEY"
    assert info.value.key == "llm.openai.api_key_env"
    assert "export OPENAI_API_KEY" in str(info.value)


def test_local_server_needs_no_key() -> None:
    runtime = runtime_with({}, api_key_env="", base_url="http://127.0.0.1:11434/v1")
    assert isinstance(runtime.llm, OpenAILLM)

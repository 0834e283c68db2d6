"""The plugin as the runtime finds it: entry point, settings, secrets."""

from __future__ import annotations

import pytest

import hookline_telephony_twilio
from hookline.config import Secrets
from hookline.errors import ConfigError, MissingSecret
from hookline.plugins import discover
from hookline.providers import Telephony
from hookline.runtime import Runtime
from hookline.testing.harness import make_config, scripted_plugins
from hookline_telephony_twilio import TwilioSettings, TwilioTelephony


def test_found_through_its_entry_point():
    plugins = discover()
    spec = plugins.provider("telephony", "twilio")
    assert spec is not None
    assert spec.settings is TwilioSettings
    assert plugins.origin[("telephony", "twilio")] == "hookline-telephony-twilio"


def _runtime(secrets: dict[str, str], **twilio):
    config = make_config(providers={"telephony": "twilio"}, telephony={"twilio": twilio})
    return Runtime(config, scripted_plugins([hookline_telephony_twilio]), secrets=Secrets(secrets))


def test_built_by_the_runtime_from_config_and_env(twilio_secrets):
    runtime = _runtime(twilio_secrets, public_url="https://agent.example.com", token_ttl_s=5)
    telephony = runtime.telephony
    assert isinstance(telephony, TwilioTelephony) and isinstance(telephony, Telephony)
    assert telephony.settings.token_ttl_s == 5
    assert telephony.busy_message == runtime.config.agent.busy_message
    paths = [r.path for r in telephony.routes(runtime)]
    assert paths == [
        "/twilio/voice",
        "/twilio/media",
        "/twilio/status",
        "/twilio/transfer-result",
        "/twilio/sms",
    ]


def test_missing_secret_names_the_variable_and_key(twilio_secrets):
    env = {k: v for k, v in twilio_secrets.items() if k != "TWILIO_AUTH_TOKEN"}
    with pytest.raises(MissingSecret) as info:
        _runtime(env)
    assert info.value.env_var == "TWILIO_AUTH_TOKEN"
    assert info.value.key == "telephony.twilio.auth_token_env"
    with pytest.raises(MissingSecret, match="MY_SID"):
        _runtime(twilio_secrets, account_sid_env="MY_SID")


def test_unknown_setting_is_a_config_error(twilio_secrets):
    with pytest.raises(ConfigError) as info:
        _runtime(twilio_secrets, public_ur="https://typo.example.com")
    assert info.value.key == "telephony.twilio.public_ur"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("public_url", "agent.example.com"),
        ("public_url", "wss://agent.example.com"),
        ("public_url", "https://agent.example.com/?x=1"),
        ("token_ttl_s", 0),
        ("max_message_bytes", -1),
    ],
)
def test_bad_values_name_the_key(twilio_secrets, key, value):
    with pytest.raises(ConfigError) as info:
        _runtime(twilio_secrets, **{key: value})
    assert info.value.key == f"telephony.twilio.{key}"


def test_public_url_may_carry_a_path_prefix(twilio_secrets):
    runtime = _runtime(twilio_secrets, public_url="https://example.com:8443/agent")
    assert runtime.telephony.settings.public_url == "https://example.com:8443/agent"

"""Config errors name the file, the dotted key and the fix; never a traceback."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookline.config import Config, PolicyConfig, Secrets, load_config
from hookline.errors import ConfigError
from hookline.plugins import discover
from hookline.runtime import missing_secrets, resolve

ROOT = Path(__file__).resolve().parents[2]

BASE = """
[agent]
name = "Shop"
greeting = "Hello"

[providers]
telephony = "twilio"
stt = "deepgram"
llm = "openai"
tts = "deepgram"
tools = ["builtin"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture(scope="module")
def plugins():
    return discover()


def error_of(tmp_path: Path, text: str, plugins=None) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config = load_config(path)
        resolve(config, plugins or discover())
    err = info.value
    assert err.file == str(path)
    return err


@pytest.mark.parametrize(
    ("extra", "key", "fragment"),
    [
        ("[agent]\nnme = 1", None, None),  # duplicate table: TOML error, handled below
        ("[policy]\nmax_reprompts = 'two'", "policy.max_reprompts", "expected `int`"),
        ("[policy]\nmax_reprompt = 2", "policy.max_reprompt", "unknown key"),
        ("[server]\nport = 'http'", "server.port", "expected `int`"),
        (
            "[analytics]\ncaller_numbers = 'scrambled'",
            "analytics.caller_numbers",
            "expected one of: 'drop', 'hashed', 'plain'",
        ),
        ("[stt.deepgram]\nmodle = 'nova-2'", "stt.deepgram.modle", "unknown key"),
        ("[stt.deepgram]\nendpointing_ms = 'fast'", "stt.deepgram.endpointing_ms", "expected"),
        ("[stt.deepgarm]\nmodel = 'nova-2'", "stt.deepgarm", "no stt provider called"),
        ("[tools.calendar]\nx = 1", "tools.calendar", "not listed in providers.tools"),
    ],
)
def test_each_error_names_file_and_key(tmp_path, plugins, extra, key, fragment):
    if key is None:
        path = write(tmp_path, BASE + extra)
        with pytest.raises(ConfigError, match="not valid TOML"):
            load_config(path)
        return
    err = error_of(tmp_path, BASE + extra, plugins)
    assert err.key == key
    assert fragment in err.message
    assert str(err).startswith(f"{err.file}: {key}: ")


def test_unknown_provider_lists_installed(tmp_path, plugins):
    err = error_of(tmp_path, BASE.replace('llm = "openai"', 'llm = "openia"'), plugins)
    assert err.key == "providers.llm"
    assert "'openia'" in err.message and "installed: openai" in err.message


def test_unknown_tool_set(tmp_path, plugins):
    err = error_of(tmp_path, BASE.replace('["builtin"]', '["builtin", "calendar"]'), plugins)
    assert err.key == "providers.tools[1]"


def test_missing_section_and_file_and_timezone(tmp_path):
    err = error_of(tmp_path, "[agent]\nname = 'x'\n")
    assert err.key == "providers" and "required key" in err.message
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")
    err = error_of(tmp_path, BASE.replace('greeting = "Hello"', 'timezone = "Mars/Olympus"'))
    assert err.key == "agent.timezone"
    err = error_of(tmp_path, BASE.replace('greeting = "Hello"', 'instructions_file = "x.md"'))
    assert err.key == "agent.instructions_file"


def test_instructions_file_is_relative_to_the_config(tmp_path):
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "p.md").write_text("Be brief.")
    path = write(tmp_path, BASE.replace('greeting = "Hello"', 'instructions_file = "prompts/p.md"'))
    assert load_config(path).agent.instructions == "Be brief."


def test_secrets_come_from_the_environment_only(tmp_path, plugins):
    config = load_config(write(tmp_path, BASE))
    resolved = resolve(config, plugins)
    missing = missing_secrets(config, plugins, resolved, Secrets({}))
    names = {m.env_var for m in missing}
    assert {"TWILIO_AUTH_TOKEN", "DEEPGRAM_API_KEY", "OPENAI_API_KEY"} <= names
    env = {n: "x" for n in names}
    assert missing_secrets(config, plugins, resolved, Secrets(env)) == []
    # A key written into the TOML itself is refused as an unknown key.
    err = error_of(tmp_path, BASE + "[llm.openai]\napi_key = 'sk-123'", plugins)
    assert err.key == "llm.openai.api_key"


def test_shipped_configs_resolve(plugins):
    from hookline_testkit.demo import DEFAULT_CONFIG

    for path in (ROOT / "config" / "automotive.toml", DEFAULT_CONFIG):
        config = load_config(path)
        resolve(config, plugins)


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hookline.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_check_exit_codes_and_no_traceback(tmp_path):
    bad = write(tmp_path, BASE + "[policy]\nmax_reprompts = 'two'")
    result = run_cli("check", str(bad), env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{bad}: policy.max_reprompts: expected `int`" in result.stderr

    good = write(tmp_path, BASE)
    result = run_cli("check", str(good), env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    assert "missing secret" in result.stdout and "OPENAI_API_KEY" in result.stdout
    env = {
        "PATH": "/usr/bin:/bin",
        "TWILIO_AUTH_TOKEN": "t",
        "TWILIO_ACCOUNT_SID": "AC1",
        "DEEPGRAM_API_KEY": "d",
        "OPENAI_API_KEY": "o",
    }
    result = run_cli("check", str(good), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("OK")


_scalars = st.one_of(
    st.integers(), st.floats(allow_nan=False), st.text(max_size=5), st.booleans(), st.none()
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from([*PolicyConfig.__struct_fields__, "bogus"]), _scalars))
def test_policy_decoding_never_crashes(values):
    raw = {
        "agent": {},
        "providers": {"telephony": "a", "stt": "b", "llm": "c", "tts": "d"},
        "policy": values,
    }
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError:
        return  # load_config turns these into ConfigError (tested above)
    for key, value in values.items():
        got = getattr(config.policy, key)
        assert got == value or (isinstance(got, float) and got == float(value))

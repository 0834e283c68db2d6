"""Every numeric setting has a range, and `hookline serve` refuses exactly what `hookline
check` refuses, in one line naming the file and the key (issue 10, item 10)."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import trio

# Helpers shared with test_config_fuzz.py (--import-mode=importlib adds no test directory).
sys.path.insert(0, str(Path(__file__).parent))

from config_test_helpers import (
    NumericField,
    base_sections,
    check,
    numeric_fields,
    render,
    settings_sections,
)

from hookline.analytics.schema import open_database
from hookline.cli import main
from hookline.config import MAX_SECONDS
from hookline.errors import ConfigError
from hookline.plugins import discover
from hookline.server import run_server

PLUGINS = discover()
FIELDS = list(numeric_fields(settings_sections(PLUGINS)))


@pytest.fixture(scope="module")
def plugins():
    return PLUGINS


def write_config(tmp_path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(render(sections))
    return path


def with_value(field: NumericField, value: Any) -> dict[str, dict[str, Any]]:
    sections = base_sections()
    sections.setdefault(field.section, {})[field.name] = value
    return sections


def refused(path: Path, plugins) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        check(path, plugins)
    err = info.value
    assert err.file == str(path)
    assert "\n" not in str(err) and str(err).startswith(f"{path}: ")
    return err


def test_the_installed_plugins_are_all_covered():
    sections = {f.section for f in FIELDS}
    assert {"policy", "server", "prices", "stt.deepgram", "tts.deepgram", "llm.openai"} <= sections
    assert {"telephony.twilio", "tools.calendar_google", "tools.tow_requests"} <= sections


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.key)
def test_every_numeric_setting_has_a_range(field: NumericField):
    # A new numeric setting without a range fails here: give it a Meta (see config.py).
    assert field.low is not None, f"{field.key} has no lower bound"
    if field.kind is float:  # an upper bound also keeps out TOML's inf (and nan)
        assert field.high is not None and field.high <= 1e6, f"{field.key} has no upper bound"


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.key)
def test_each_bound_is_enforced_naming_the_key(tmp_path, plugins, field: NumericField):
    assert field.low is not None
    check(write_config(tmp_path, with_value(field, field.low)), plugins)
    err = refused(write_config(tmp_path, with_value(field, field.below())), plugins)
    assert err.key == field.key, str(err)
    assert "expected" in err.message
    bad_values: list[Any] = ["7"]  # the right number as a string is still the wrong type
    if field.high is not None:
        check(write_config(tmp_path, with_value(field, field.high)), plugins)
        bad_values.append(field.above())
    if field.kind is float:
        bad_values += [math.nan, math.inf, -math.inf]
    else:
        bad_values.append(float(field.low))  # 1.0 where a count is wanted
    for value in bad_values:
        err = refused(write_config(tmp_path, with_value(field, value)), plugins)
        assert err.key == field.key, (value, str(err))


# Each case: how to break the base config, and the key (or words) the error must name.
ISSUE_CASES: list[tuple[str, dict[str, dict[str, Any]], str]] = [
    ("port -5", {"server": {"port": -5}}, "server.port"),
    ("port 99999", {"server": {"port": 99999}}, "server.port"),
    ("port 1e24", {"server": {"port": 1e24}}, "server.port"),
    ("no call slots", {"server": {"port": 0, "max_concurrent_calls": 0}}, "max_concurrent_calls"),
    ("negative slots", {"server": {"port": 0, "max_concurrent_calls": -3}}, "server.max_"),
    ("tool timeout -5", {"policy": {"tool_timeout_s": -5.0}}, "policy.tool_timeout_s"),
    ("silence -1", {"policy": {"silence_reprompt_s": -1.0}}, "policy.silence_reprompt_s"),
    ("max call 0", {"policy": {"max_call_s": 0.0}}, "policy.max_call_s"),
    ("max call inf", {"policy": {"max_call_s": math.inf}}, "policy.max_call_s"),
    ("filler nan", {"policy": {"filler_after_s": math.nan}}, "policy.filler_after_s"),
    ("prices", {"prices": {"stt_per_minute": -0.01}}, "prices.stt_per_minute"),
    ("stt keepalive", {"stt.deepgram": {"keepalive_s": 0.0}}, "stt.deepgram.keepalive_s"),
    ("tts speed", {"tts.deepgram": {"speed": 3.0}}, "tts.deepgram.speed"),
    ("twilio ttl", {"telephony.twilio": {"token_ttl_s": math.inf}}, "telephony.twilio."),
    ("calendar bays", {"tools.calendar_google": {"bays": 0}}, "tools.calendar_google.bays"),
    ("tow eta", {"tools.tow_requests": {"eta_minutes": -1}}, "tools.tow_requests.eta"),
    ("time zone dir", {"agent": {"timezone": "America"}}, "agent.timezone"),
]


def _break(case: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    sections = base_sections()
    for section, values in case.items():
        sections.setdefault(section, {}).update(values)
    return sections


def _bad_files(tmp_path: Path) -> list[tuple[str, Path, str]]:
    """Files no config can be read from: (label, path, words the error must hold)."""
    binary = tmp_path / "binary.toml"
    binary.write_bytes(bytes(range(256)) * 4)
    utf16 = tmp_path / "utf16.toml"
    utf16.write_text(render(base_sections()), encoding="utf-16")
    directory = tmp_path / "a-directory.toml"
    directory.mkdir()
    prompt = tmp_path / "prompt.bin"
    prompt.write_bytes(b"Be brief.\xff\xfe\x00\x81")
    with_binary_prompt = tmp_path / "binary-prompt.toml"
    with_binary_prompt.write_text(render(_break({"agent": {"instructions_file": "prompt.bin"}})))
    with_dir_prompt = tmp_path / "dir-prompt.toml"
    with_dir_prompt.write_text(render(_break({"agent": {"instructions_file": "."}})))
    dangling = tmp_path / "dangling.toml"
    dangling.symlink_to(tmp_path / "gone.toml")
    return [
        ("binary", binary, "not UTF-8 text"),
        ("utf-16", utf16, "UTF-16"),
        ("directory", directory, "is a directory"),
        ("binary instructions", with_binary_prompt, "agent.instructions_file"),
        ("directory instructions", with_dir_prompt, "agent.instructions_file"),
        ("dangling symlink", dangling, "no such file"),
    ]


async def _serve_error(path: Path) -> ConfigError:
    """What `hookline serve` says about a config; a serve that starts instead fails here."""
    with pytest.raises(ConfigError) as info:
        with trio.fail_after(120):  # generous: the machine is shared; a refusal is instant
            await run_server(str(path))
    return info.value


async def test_serve_refuses_exactly_what_check_refuses(tmp_path, capsys, monkeypatch):
    for env in ("TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID", "DEEPGRAM_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.setenv(env, "x")  # a missing secret must not be what refuses them
    cases = _bad_files(tmp_path)
    for label, case, words in ISSUE_CASES:
        folder = tmp_path / label.replace(" ", "_")
        folder.mkdir()
        cases.append((label, write_config(folder, _break(case)), words))
    for label, path, words in cases:
        assert main(["check", str(path)]) == 1, label
        out, err = capsys.readouterr()
        assert "Traceback" not in err and "OK" not in out, label
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"hookline: {path}: "), (label, err)
        assert words in lines[0], (label, lines[0])
        served = await _serve_error(path)
        assert f"hookline: {served}" == lines[0], label


def _cli(*args: str, without_dac_override: bool = False) -> subprocess.CompletedProcess[str]:
    prefix: list[str] = []
    if without_dac_override:
        # Root reads any file through CAP_DAC_OVERRIDE: run as root without it (and
        # without CAP_DAC_READ_SEARCH) to see a refusal. Not as another user: that user
        # may not reach the interpreter or the workspace (a 0700 /root or clone folder).
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to test an unreadable file as root"
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search"]
    return subprocess.run(
        [*prefix, sys.executable, "-m", "hookline.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )


def test_unreadable_file_is_one_line_for_check_and_serve():
    folder = Path(tempfile.mkdtemp(prefix="hookline-unreadable-"))
    try:
        folder.chmod(0o755)
        path = folder / "agent.toml"
        path.write_text(render(base_sections()))
        path.chmod(0)
        for command in ("check", "serve"):
            result = _cli(command, str(path), without_dac_override=os.geteuid() == 0)
            assert result.returncode == 1, result.stderr
            assert result.stderr == f"hookline: {path}: cannot read: Permission denied\n"
    finally:
        shutil.rmtree(folder)


def test_bad_files_are_one_line_from_the_command_line(tmp_path):
    for label, path, words in _bad_files(tmp_path)[:3]:
        result = _cli("serve", str(path))
        assert result.returncode == 1, (label, result.stderr)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.splitlines()) == 1 and words in result.stderr, label


@pytest.mark.parametrize("days", ["nan", "inf", "-1", "1e300", "-inf"])
def test_prune_refuses_days_it_cannot_count(tmp_path, capsys, days):
    db = tmp_path / "calls.duckdb"
    open_database(db, create=True).close()
    code = main(["analytics", "prune", "--database", str(db), f"--older-than={days}"])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert err == "hookline: --older-than takes a number of days, 0 or more and at most 36600\n"


def test_seconds_bound_is_a_day():
    # Documented in config.py; a test so a change to it is a decision, not an accident.
    assert MAX_SECONDS == 86400.0

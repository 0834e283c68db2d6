"""Config fuzzing: whatever the file holds, `load_config` + `resolve` (what `hookline check`
and `hookline serve` both run) either decode it or raise a ConfigError that is one line
naming the file. Never another exception, never a traceback."""

from __future__ import annotations

import datetime as dt
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))

from config_test_helpers import (
    CORE_SECTIONS,
    base_sections,
    check,
    numeric_fields,
    render,
    settings_sections,
)

from hookline.config import Config
from hookline.errors import ConfigError
from hookline.plugins import discover

PLUGINS = discover()
SECTIONS = settings_sections(PLUGINS)
NUMERIC = {f.key for f in numeric_fields(SECTIONS)}
# Every (section, key) a config may set, plus a misspelt one per section.
KEYS = sorted(
    [(section, name) for section, struct in SECTIONS.items() for name in struct.__struct_fields__]
    + [(section, "bogus") for section in SECTIONS]
    + [("providers", name) for name in ("telephony", "stt", "llm", "tts", "tools")]
)
assert set(CORE_SECTIONS) <= {section for section, _ in KEYS}

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def full_sections() -> dict[str, dict[str, Any]]:
    """A valid config that sets many keys, so mangling it hits every kind of value."""
    sections = base_sections()
    sections["agent"].update(timezone="America/Chicago", fillers=["One moment."])
    sections["policy"] = {"silence_reprompt_s": 8.0, "max_reprompts": 2, "tool_timeout_s": 10.0}
    sections["server"].update(host="127.0.0.1", max_concurrent_calls=5, drain_timeout_s=3.0)
    sections["analytics"] = {"enabled": True, "caller_numbers": "hashed"}
    sections["prices"] = {"stt_per_minute": 0.0059}
    sections["recording"] = {"enabled": True, "disclosure": "This call is recorded."}
    sections["summary"] = {"timeout_s": 20.0, "max_tokens": 300, "concurrency": 2}
    sections["dashboard"] = {"session_hours": 8.0, "login_attempts": 5, "refresh_s": 5.0}
    sections["stt.deepgram"] = {"keepalive_s": 4.0, "utterance_end_ms": 1000}
    sections["tts.deepgram"] = {"speed": 1.0, "flush_budget": 18}
    sections["llm.openai"] = {"temperature": 0.3, "max_tokens": 300}
    sections["telephony.twilio"] = {"public_url": "https://agent.example.com"}
    sections["tools.calendar_google"].update(
        hours={"mon": "08:00-17:00", "sat": ["09:00-12:00", "13:00-15:00"]},
        closures=[dt.date(2026, 12, 25)],
        services={"oil change": 45},
        bays=2,
    )
    sections["tools.tow_requests"] = {"eta_minutes": 45}
    return sections


VALID = render(full_sections())


def outcome(path: Path) -> ConfigError | None:
    """None for a clean decode; the ConfigError otherwise (after checking its form)."""
    try:
        check(path, PLUGINS)
    except ConfigError as e:
        text = str(e)
        assert e.file == str(path), text
        assert text.startswith(f"{path}: "), text
        assert text.isprintable() and "\n" not in text, repr(text)
        return e
    return None


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory(prefix="hookline-fuzz-") as name:
        yield Path(name)


def write(folder: Path, data: bytes | str) -> Path:
    path = folder / "agent.toml"
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def test_the_fuzzed_config_is_valid(folder):
    assert outcome(write(folder, VALID)) is None


@FUZZ
@given(data=st.binary(max_size=600))
@example(data=b"\xff\xfe[\x00a\x00]\x00")  # UTF-16
@example(data=b"a = " + b"[" * 5000)  # deeper than the TOML parser recurses
@example(data=b"\x00\x01\x02")
@example(data=b"\xef\xbb\xbf" + VALID.encode())  # a UTF-8 byte order mark is fine
def test_random_bytes(folder, data):
    err = outcome(write(folder, data))
    if data.startswith(b"\xef\xbb\xbf"):
        assert err is None


@FUZZ
@given(cut=st.integers(0, len(VALID)))
def test_truncated_config(folder, cut):
    outcome(write(folder, VALID[:cut]))


@FUZZ
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255), st.booleans()),
        min_size=1,
        max_size=4,
    )
)
def test_mangled_bytes(folder, edits):
    data = bytearray(VALID.encode())
    for at, byte, insert in edits:
        at = min(at, len(data) - 1)
        if insert:
            data.insert(at, byte)
        else:
            data[at] = byte
    outcome(write(folder, bytes(data)))


_texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
_values = st.recursive(
    st.one_of(
        st.integers(-(2**70), 2**70),
        st.integers(-3, 70000),
        st.floats(allow_nan=True, allow_infinity=True),
        _texts,
        st.sampled_from(["America", "UTC", ".", "..", "/", "08:00-17:00", "closed", "local"]),
        st.booleans(),
        st.dates(),
        st.datetimes(),
        st.times(),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(_texts, inner, max_size=3)
    ),
    max_leaves=6,
)


@FUZZ
@given(
    changes=st.lists(st.tuples(st.sampled_from(KEYS), _values), min_size=1, max_size=3),
    quoted_key=st.one_of(st.none(), _texts),
)
@example(changes=[(("server", "port"), 1e24)], quoted_key=None)
@example(changes=[(("agent", "timezone"), "America")], quoted_key=None)
@example(changes=[(("tools.calendar_google", "timezone"), "America")], quoted_key=None)
@example(changes=[(("agent", "instructions_file"), "/")], quoted_key="a\nb")
def test_replaced_values(folder, changes, quoted_key):
    sections = full_sections()
    for (section, key), value in changes:
        sections.setdefault(section, {})[key] = value
    if quoted_key is not None:  # a key only quoting allows: newlines, dots, quotes
        sections["policy"][quoted_key] = 1
    err = outcome(write(folder, render(sections)))
    for (section, key), value in changes:
        dotted = f"{section}.{key}"
        if dotted in NUMERIC and isinstance(value, float) and not math.isfinite(value):
            assert err is not None, f"{dotted} = {value} was accepted"


def test_every_core_section_is_fuzzed():
    fields = {name for name in Config.__struct_fields__ if name != "path"}
    fuzzed = {section.split(".")[0] for section, _ in KEYS}
    assert fields <= fuzzed | {"telephony", "stt", "llm", "tts", "tools"}

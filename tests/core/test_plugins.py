"""Discovery through the `hookline` entry-point group."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import msgspec
import pytest

from hookline import ProviderSpec, hookimpl
from hookline.errors import PluginError
from hookline.plugins import Plugins, discover, new_plugin_manager

BUNDLED = {
    ("telephony", "twilio"),
    ("stt", "deepgram"),
    ("llm", "openai"),
    ("tts", "deepgram"),
}


def real_entry_points():
    return list(importlib.metadata.entry_points(group="hookline"))


def test_bundled_and_third_party_plugins_are_found():
    plugins = discover()
    assert BUNDLED <= set(plugins.providers)
    assert {"builtin", "calendar_google", "tow_requests"} <= set(plugins.toolsets)
    # The example plugin is found through its entry point like any third party's.
    assert plugins.origin["tow_requests"] == "hookline-example-tow"
    assert plugins.failed == []


def test_a_failing_plugin_is_reported_and_the_others_load():
    broken = importlib.metadata.EntryPoint(
        name="broken", value="hookline_no_such_module", group="hookline"
    )
    plugins = discover([*real_entry_points(), broken])
    (failure,) = plugins.failed
    assert failure.name == "broken"
    assert failure.error.startswith("ModuleNotFoundError")
    assert "hookline_no_such_module" in failure.error
    assert BUNDLED <= set(plugins.providers)


def test_plugins_command_lists_providers_and_failures():
    out = subprocess.run(
        [sys.executable, "-m", "hookline.cli", "plugins"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "hookline-stt-deepgram 0.1.0" in out
    assert "provider  stt/deepgram" in out
    assert "tools     tow_requests: request_tow" in out
    assert "observes  hookline_call_ended" in out


class _NoSettings(msgspec.Struct):
    pass


def _offering(kind, name):
    class Plugin:
        @hookimpl
        def hookline_providers(self):
            return [ProviderSpec(kind, name, _NoSettings, lambda s, rt: object())]

    return Plugin()


def test_two_providers_with_the_same_name_is_an_error_naming_both():
    plugins = Plugins(pm=new_plugin_manager())
    plugins.add(_offering("stt", "acme"), "first", "hookline-stt-acme")
    with pytest.raises(PluginError) as info:
        plugins.add(_offering("stt", "acme"), "second", "acme-stt-fork")
    assert "hookline-stt-acme" in str(info.value) and "acme-stt-fork" in str(info.value)
    # Same name for another kind is fine.
    plugins.add(_offering("tts", "acme"), "third", "hookline-tts-acme")


def test_a_hook_returning_garbage_is_a_plugin_error():
    class Bad:
        @hookimpl
        def hookline_providers(self):
            return ["not a spec"]

    with pytest.raises(PluginError, match="expected ProviderSpec"):
        Plugins(pm=new_plugin_manager()).add(Bad(), "bad", "bad-dist")

"""Build a Runtime around scripted providers and run scripted calls, in a few lines:

    runtime = await scripted_runtime(llm=ScriptedLLM(["Sure. What day works for you?"]))
    stt = runtime.stt
    leg = ScriptedLeg(call_info(), [WaitForAgent(), Say("I need an oil change")], stt)
    record = await run_call(runtime, leg)

Extra plugins (a tool set under test, an observer) are passed as objects with hook
implementations; everything else is what a real deployment runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from .. import builtin_tools
from ..config import Config
from ..events import CallRecord
from ..hookspecs import hookimpl
from ..plugins import Plugins, discover, new_plugin_manager
from ..providers import CallHandler, ProviderSpec, Route
from ..runtime import Runtime
from .scripted import ScriptedLeg, ScriptedLLM, ScriptedSTT, ScriptedTTS

__all__ = ["ScriptedTelephony", "make_config", "run_call", "scripted_plugins", "scripted_runtime"]


class _NoSettings(msgspec.Struct, forbid_unknown_fields=True):
    pass


class ScriptedTelephony:
    """Telephony with no server routes: calls are handed to the runtime directly."""

    def routes(self, handler: CallHandler) -> Sequence[Route]:
        return []


class _ScriptedPlugin:
    @hookimpl
    def hookline_providers(self) -> list[ProviderSpec]:
        return [
            ProviderSpec("telephony", "scripted", _NoSettings, lambda s, ctx: ScriptedTelephony()),
            ProviderSpec("stt", "scripted", _NoSettings, lambda s, ctx: ScriptedSTT()),
            ProviderSpec("llm", "scripted", _NoSettings, lambda s, ctx: ScriptedLLM()),
            ProviderSpec("tts", "scripted", _NoSettings, lambda s, ctx: ScriptedTTS()),
        ]


def scripted_plugins(extra: Iterable[Any] = (), *, installed: bool = False) -> Plugins:
    """The scripted providers, the built-in tools, and any `extra` plugin objects.

    With `installed`, every plugin of the `hookline` entry-point group is loaded too,
    the way a deployment finds them.
    """
    if installed:
        plugins = discover()
    else:
        plugins = Plugins(pm=new_plugin_manager())
        plugins.add(builtin_tools, "builtin", "hookline")
    plugins.add(_ScriptedPlugin(), "scripted", "hookline.testing")
    for i, plugin in enumerate(extra):
        plugins.add(plugin, getattr(plugin, "__name__", f"extra{i}"), "test")
    return plugins


def make_config(**sections: dict[str, Any]) -> Config:
    """A Config using the scripted providers; `sections` override or add TOML sections."""
    raw: dict[str, Any] = {
        "agent": {
            "name": "Riverside Auto Service",
            "instructions": "You are the phone agent of Riverside Auto Service.",
            "greeting": "Thanks for calling Riverside Auto Service. How can I help?",
            "fillers": ["One moment, let me check that."],
        },
        "providers": {
            "telephony": "scripted",
            "stt": "scripted",
            "llm": "scripted",
            "tts": "scripted",
            "tools": ["builtin"],
        },
        "analytics": {"enabled": False},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return msgspec.convert(raw, Config)


async def scripted_runtime(
    config: Config | None = None,
    *,
    stt: Any = None,
    llm: Any = None,
    tts: Any = None,
    telephony: Any = None,
    plugins: Iterable[Any] = (),
    installed: bool = False,
    start: bool = True,
) -> Runtime:
    """A Runtime over scripted providers (or the given real ones), phrases cached."""
    providers = {
        "telephony": telephony or ScriptedTelephony(),
        "stt": stt or ScriptedSTT(),
        "llm": llm or ScriptedLLM(),
        "tts": tts or ScriptedTTS(),
    }
    runtime = Runtime(
        config or make_config(),
        scripted_plugins(plugins, installed=installed),
        providers=providers,
    )
    if start:
        await runtime.start()
    return runtime


async def run_call(runtime: Runtime, leg: ScriptedLeg) -> CallRecord:
    """Admit and run one scripted call to its end."""
    assert runtime.try_admit(), "runtime refused the call"
    async with leg.running():
        return await runtime.run_call(leg)

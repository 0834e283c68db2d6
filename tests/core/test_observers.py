"""Observer plugins are called by pluggy, in pluggy's order, each one isolated."""

from __future__ import annotations

import importlib.metadata
import logging
import sys
import types

import pytest

from hookline.errors import PluginError
from hookline.events import DtmfReceived
from hookline.hookspecs import hookimpl
from hookline.plugins import Plugins, discover, new_plugin_manager
from hookline.testing.harness import scripted_runtime
from hookline.testing.scripted import call_info


def _event() -> DtmfReceived:
    return DtmfReceived(t=0.0, turn=1, digit="5")


def _observer(name: str, seen: list[str], **marks: bool):
    class Observer:
        @hookimpl(**marks)
        def hookline_call_event(self, call, event):
            seen.append(name)

    return Observer()


async def test_observer_order_follows_tryfirst_and_trylast():
    seen: list[str] = []
    # Registered in the opposite of the order they ask for.
    plugins = [
        _observer("last", seen, trylast=True),
        _observer("plain", seen),
        _observer("first", seen, tryfirst=True),
    ]
    runtime = await scripted_runtime(plugins=plugins, start=False)
    runtime.notify(call_info(), _event())
    assert seen == ["first", "plain", "last"]


async def test_observer_order_is_pluggys_own():
    seen: list[str] = []
    plugins = [
        _observer("a", seen),
        _observer("b", seen, trylast=True),
        _observer("c", seen),
        _observer("d", seen, tryfirst=True),
        _observer("e", seen),
    ]
    runtime = await scripted_runtime(plugins=plugins, start=False)
    info, event = call_info(), _event()
    runtime.notify(info, event)
    ours, seen[:] = list(seen), []
    runtime.plugins.pm.hook.hookline_call_event(runtime=runtime, call=info, event=event)
    assert ours == seen
    assert ours[0] == "d" and ours[-1] == "b"


async def test_a_raising_observer_is_logged_and_the_others_still_run(caplog):
    seen: list[str] = []

    class Broken:
        __name__ = "broken_sink"

        @hookimpl(tryfirst=True)
        def hookline_call_event(self, event):
            raise RuntimeError("disk full")

    runtime = await scripted_runtime(
        plugins=[_observer("after", seen, trylast=True), Broken(), _observer("plain", seen)],
        start=False,
    )
    with caplog.at_level(logging.ERROR):
        runtime.notify(call_info(), _event())
    assert seen == ["plain", "after"]
    (failure,) = [r for r in caplog.records if "disk full" in (r.exc_text or "")]
    assert "broken_sink" in failure.getMessage()
    assert "hookline_call_event" in failure.getMessage()


async def test_observers_take_any_subset_of_the_arguments_and_defaults():
    seen: list[tuple] = []

    class Sink:
        @hookimpl
        def hookline_call_started(self, started):
            seen.append(("started", started))

        @hookimpl
        def hookline_call_event(self, runtime, event, call=None):
            seen.append(("event", runtime is rt, call.call_id, event.digit))

    rt = await scripted_runtime(plugins=[Sink()], start=False)
    info = call_info()
    rt.call_started(info, 12.5)
    rt.notify(info, _event())
    assert seen == [("started", 12.5), ("event", True, info.call_id, "5")]


def _wrapping(**marks: bool):
    class Wrapping:
        @hookimpl(**marks)
        def hookline_call_ended(self, record):
            yield

    return Wrapping()


@pytest.mark.parametrize("marks", [{"wrapper": True}, {"hookwrapper": True}])
def test_a_wrapper_observer_is_refused_naming_the_plugin(marks):
    plugins = Plugins(pm=new_plugin_manager())
    with pytest.raises(PluginError) as info:
        plugins.add(_wrapping(**marks), "timing", "hookline-timing")
    message = str(info.value)
    assert "hookline-timing" in message and "hookline_call_ended" in message
    assert "wrapper" in message
    # Nothing of it stays registered.
    assert plugins.pm.hook.hookline_call_ended.get_hookimpls() == []
    assert plugins.loaded == []


def test_a_wrapper_observer_plugin_is_a_load_failure_and_the_others_load(monkeypatch):
    module = types.ModuleType("hookline_timing_observer")

    @hookimpl(wrapper=True)
    def hookline_call_event(call, event):
        yield

    module.hookline_call_event = hookline_call_event  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    ep = importlib.metadata.EntryPoint(name="timing", value=module.__name__, group="hookline")
    plugins = discover([*importlib.metadata.entry_points(group="hookline"), ep])
    (failure,) = plugins.failed
    assert failure.name == "timing"
    assert "wrapper" in failure.error and "hookline_call_event" in failure.error
    assert ("stt", "deepgram") in plugins.providers
    assert plugins.pm.get_plugin("timing") is None

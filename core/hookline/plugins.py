"""Plugin discovery: the `hookline` entry-point group, loaded into one PluginManager.

A plugin that fails to import, or implements a per-call observer hook as a wrapper, is
remembered with its error (`hookline plugins` shows it) and the others still load.
Providers and tool sets are indexed by (kind, name); two plugins claiming the same one is
a `PluginError` naming both distributions.
"""

from __future__ import annotations

import importlib.metadata
import logging
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError
from .outbox.channel import ChannelSpec
from .providers import ProviderKind, ProviderSpec
from .tools import ToolSet

__all__ = ["LoadFailure", "ObserverWrapperError", "PluginInfo", "Plugins", "discover"]

log = logging.getLogger(__name__)

OBSERVER_HOOKS = (
    "hookline_call_started",
    "hookline_call_event",
    "hookline_call_ended",
    "hookline_runtime_started",
    "hookline_runtime_stopping",
)

# The hooks `Runtime` dispatches one implementation at a time (so one failing observer
# cannot stop the others, nor the others' flush at shutdown); a wrapper there would wrap
# nothing.
PER_CALL_OBSERVER_HOOKS = (*OBSERVER_HOOKS[:3], "hookline_runtime_stopping", "hookline_health")


class ObserverWrapperError(PluginError):
    """A plugin implements a per-call observer hook as a (hook)wrapper."""


@dataclass
class PluginInfo:
    name: str  # the entry point's name
    distribution: str
    version: str
    providers: list[ProviderSpec] = field(default_factory=list)
    toolsets: list[ToolSet] = field(default_factory=list)
    channels: list[ChannelSpec] = field(default_factory=list)
    observes: list[str] = field(default_factory=list)


@dataclass
class LoadFailure:
    name: str
    distribution: str
    version: str
    error: str  # one line: "ModuleNotFoundError: No module named 'x'"
    detail: str  # the traceback, for --verbose


@dataclass
class Plugins:
    pm: pluggy.PluginManager
    loaded: list[PluginInfo] = field(default_factory=list)
    failed: list[LoadFailure] = field(default_factory=list)
    providers: dict[tuple[ProviderKind, str], ProviderSpec] = field(default_factory=dict)
    toolsets: dict[str, ToolSet] = field(default_factory=dict)
    channels: dict[str, ChannelSpec] = field(default_factory=dict)  # notification channels
    # Which distribution offers each provider / tool set, for error messages.
    origin: dict[Any, str] = field(default_factory=dict)

    def provider(self, kind: ProviderKind, name: str) -> ProviderSpec | None:
        return self.providers.get((kind, name))

    def names(self, kind: ProviderKind) -> list[str]:
        return sorted(n for k, n in self.providers if k == kind)

    def add(
        self, module: ModuleType | object, name: str, dist: str = "", version: str = ""
    ) -> None:
        """Register one plugin object and index what it offers."""
        self.pm.register(module, name=name)
        info = PluginInfo(name=name, distribution=dist or name, version=version)
        self._refuse_observer_wrappers(module, info)
        for impl in self.pm.hook.hookline_providers.get_hookimpls():
            if impl.plugin is module:
                info.providers.extend(_results(impl.function(), ProviderSpec, name))
        for impl in self.pm.hook.hookline_toolsets.get_hookimpls():
            if impl.plugin is module:
                info.toolsets.extend(_results(impl.function(), ToolSet, name))
        for impl in self.pm.hook.hookline_notification_channels.get_hookimpls():
            if impl.plugin is module:
                info.channels.extend(_results(impl.function(), ChannelSpec, name))
        info.observes = [
            h for h in OBSERVER_HOOKS
            if any(i.plugin is module for i in getattr(self.pm.hook, h).get_hookimpls())
        ]  # fmt: skip
        for spec in info.providers:
            key = (spec.kind, spec.name)
            if key in self.providers:
                self.pm.unregister(module)
                raise PluginError(
                    f"provider {spec.kind}/{spec.name} is offered by both "
                    f"{self.origin[key]} and {info.distribution}; uninstall one of them"
                )
            self.providers[key] = spec
            self.origin[key] = info.distribution
        for ts in info.toolsets:
            if ts.name in self.toolsets:
                self.pm.unregister(module)
                raise PluginError(
                    f"tool set {ts.name!r} is offered by both "
                    f"{self.origin[ts.name]} and {info.distribution}; uninstall one of them"
                )
            self.toolsets[ts.name] = ts
            self.origin[ts.name] = info.distribution
        for ch in info.channels:
            key = ("notifications", ch.name)
            if key in self.origin:
                self.pm.unregister(module)
                raise PluginError(
                    f"notification channel {ch.name!r} is offered by both "
                    f"{self.origin[key]} and {info.distribution}; uninstall one of them"
                )
            self.channels[ch.name] = ch
            self.origin[key] = info.distribution
        self.loaded.append(info)

    def _refuse_observer_wrappers(self, module: object, info: PluginInfo) -> None:
        for hook in PER_CALL_OBSERVER_HOOKS:
            for impl in getattr(self.pm.hook, hook).get_hookimpls():
                if impl.plugin is module and (impl.wrapper or impl.hookwrapper):
                    self.pm.unregister(module)
                    raise ObserverWrapperError(
                        f"plugin {info.name} ({info.distribution}) implements {hook} as a "
                        "wrapper; observer hooks take plain implementations only "
                        "(order them with tryfirst/trylast)"
                    )


def _results(value: Any, kind: type, plugin: str) -> list[Any]:
    items = list(value or [])
    for item in items:
        if not isinstance(item, kind):
            raise PluginError(f"plugin {plugin} returned {item!r}, expected {kind.__name__}")
    return items


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def discover(
    entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
) -> Plugins:
    """Load every plugin of the `hookline` entry-point group.

    Import errors are collected in `Plugins.failed`; duplicate providers raise PluginError.
    """
    plugins = Plugins(pm=new_plugin_manager())
    eps = (
        entry_points
        if entry_points is not None
        else importlib.metadata.entry_points(group=hookspecs.PROJECT)
    )
    for ep in sorted(eps, key=lambda e: e.name):
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "?"
        try:
            module = ep.load()
        except Exception as e:  # a broken plugin must not stop the others
            log.warning("plugin %s (%s) failed to load: %s", ep.name, dist, e)
            plugins.failed.append(
                LoadFailure(
                    name=ep.name,
                    distribution=dist,
                    version=version,
                    error=f"{type(e).__name__}: {e}",
                    detail=traceback.format_exc(),
                )
            )
            continue
        try:
            plugins.add(module, ep.name, dist, version)
        except ObserverWrapperError as e:  # refused, like a plugin that fails to import
            log.warning("plugin %s (%s) refused: %s", ep.name, dist, e)
            plugins.failed.append(
                LoadFailure(ep.name, dist, version, f"{type(e).__name__}: {e}", str(e))
            )
    return plugins

"""Shared by the config tests: a config built from sections, rendered as TOML, and checked
through the public path (`load_config`, then `resolve` against the installed plugins)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect

from hookline.config import (
    AgentConfig,
    AnalyticsConfig,
    Config,
    DashboardConfig,
    LoggingConfig,
    MetricsConfig,
    OutboxConfig,
    PolicyConfig,
    PricesConfig,
    RecordingConfig,
    ServerConfig,
    StorageConfig,
    SummaryConfig,
    load_config,
)
from hookline.plugins import Plugins
from hookline.runtime import KINDS, resolve

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def base_sections() -> dict[str, dict[str, Any]]:
    """A valid config using every installed plugin, listening on any free port."""
    return {
        "agent": {"name": "Shop", "greeting": "Hello"},
        "providers": {
            "telephony": "twilio",
            "stt": "deepgram",
            "llm": "openai",
            "tts": "deepgram",
            "tools": ["builtin", "calendar_google", "tow_requests", "knowledge"],
        },
        "server": {"port": 0},
        "tools.calendar_google": {"backend": "local"},
        # The webhook form: the file form would need a knowledge file beside each config.
        "tools.knowledge": {"webhook_url": "https://shop.example.com/knowledge"},
        "notifications.sms": {"from_number": "+13125550140"},
        "notifications.webhook": {"url": "https://shop.example.com/hooks/hookline"},
    }


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # 'inf', 'nan', '1e-05' are all TOML
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return msgspec.json.encode(value).decode()  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return str(value)  # dates and times print as TOML does


def toml_key(key: str) -> str:
    return key if _BARE.fullmatch(key) else toml_value(key)


def render(sections: dict[str, dict[str, Any]]) -> str:
    """TOML for {"section.sub": {key: value}}; keys that need it are quoted."""
    out = []
    for name, values in sections.items():
        out.append(f"[{name}]")
        out.extend(f"{toml_key(key)} = {toml_value(value)}" for key, value in values.items())
        out.append("")
    return "\n".join(out)


def check(path: Path, plugins: Plugins) -> Config:
    """What `hookline check` and `hookline serve` both do before anything starts."""
    config = load_config(path)
    resolve(config, plugins)
    return config


CORE_SECTIONS: dict[str, type[msgspec.Struct]] = {
    "agent": AgentConfig,
    "policy": PolicyConfig,
    "server": ServerConfig,
    "analytics": AnalyticsConfig,
    "prices": PricesConfig,
    "recording": RecordingConfig,
    "summary": SummaryConfig,
    "outbox": OutboxConfig,
    "storage": StorageConfig,
    "logging": LoggingConfig,
    "metrics": MetricsConfig,
    "dashboard": DashboardConfig,
}


def settings_sections(plugins: Plugins) -> dict[str, type[msgspec.Struct]]:
    """Every settings Struct, core and plugin, by the section that holds it."""
    sections = dict(CORE_SECTIONS)
    for kind in KINDS:
        for name in plugins.names(kind):
            spec = plugins.provider(kind, name)
            assert spec is not None
            if spec.settings is not None:
                sections[f"{kind}.{name}"] = spec.settings
    for name, toolset in plugins.toolsets.items():
        if toolset.settings is not None:
            sections[f"tools.{name}"] = toolset.settings
    for name, channel in plugins.channels.items():
        sections[f"notifications.{name}"] = channel.settings
    return sections


@dataclass(frozen=True)
class NumericField:
    section: str
    name: str
    kind: type  # int or float
    low: float | None  # the smallest accepted value
    high: float | None  # the largest accepted value

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"

    def below(self) -> int | float:
        assert self.low is not None
        return self.low - 1 if self.kind is int else math.nextafter(self.low, -math.inf)

    def above(self) -> int | float:
        assert self.high is not None
        return self.high + 1 if self.kind is int else math.nextafter(self.high, math.inf)


def numeric_fields(sections: dict[str, type[msgspec.Struct]]) -> Iterator[NumericField]:
    """Every int or float field (optional or not) with the range msgspec enforces."""
    for section, struct in sections.items():
        info = msgspec.inspect.type_info(struct)
        assert isinstance(info, msgspec.inspect.StructType)
        for field in info.fields:
            t = field.type
            if isinstance(t, msgspec.inspect.UnionType):
                t = next((x for x in t.types if not isinstance(x, msgspec.inspect.NoneType)), t)
            if isinstance(t, msgspec.inspect.IntType):
                low = t.ge if t.ge is not None else (t.gt + 1 if t.gt is not None else None)
                high = t.le if t.le is not None else (t.lt - 1 if t.lt is not None else None)
                yield NumericField(section, field.encode_name, int, low, high)
            elif isinstance(t, msgspec.inspect.FloatType):
                low = t.ge
                if low is None and t.gt is not None:
                    low = math.nextafter(t.gt, math.inf)
                high = t.le
                if high is None and t.lt is not None:
                    high = math.nextafter(t.lt, -math.inf)
                yield NumericField(section, field.encode_name, float, low, high)

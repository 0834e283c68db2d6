"""Configuration: one TOML file decoded into msgspec Structs.

The core sections are fixed Structs; each chosen provider's section (`[stt.deepgram]`)
and each tool set's section (`[tools.calendar_google]`) is decoded with the Struct its
plugin declares, once the plugins are known (`resolve_sections`). Every error names the
file, the dotted key and what was expected. Secrets are never in the file: `*_env` keys
name environment variables, read through `Secrets`.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import msgspec.inspect

from .errors import ConfigError, MissingSecret

__all__ = [
    "AgentConfig",
    "AnalyticsConfig",
    "Config",
    "PolicyConfig",
    "PricesConfig",
    "ProvidersConfig",
    "Secrets",
    "ServerConfig",
    "decode_section",
    "load_config",
    "secret_keys",
]


# Short acknowledgements that mean "go on", not "stop": they never interrupt the agent.
BACKCHANNELS = (
    "okay", "ok", "mhm", "mm", "hmm", "uh-huh", "uh huh", "yeah", "yes", "right",
    "sure", "yep", "got it", "alright", "all right", "i see",
)  # fmt: skip

S = TypeVar("S", bound=msgspec.Struct)


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class AgentConfig(_Section):
    name: str = "hookline agent"
    instructions: str = ""
    instructions_file: str | None = None  # relative to the config file
    greeting: str = "Hello, how can I help?"
    goodbye: str = "Thanks for calling. Goodbye!"
    fillers: list[str] = msgspec.field(default_factory=lambda: ["One moment, let me check that."])
    reprompt: str = "Are you still there?"
    apology: str = "I'm sorry, we're having technical trouble. Please call back in a few minutes."
    fallback_line: str = "Sorry, I'm having trouble on my end. Could you say that again?"
    busy_message: str = "All of our lines are busy right now. Please call back in a few minutes."
    transfer_number: str | None = None
    transfer_announcement: str = "Let me transfer you to a person. One moment."
    transfer_digit: str | None = None  # a DTMF key that sends the caller to a person
    timezone: str = "UTC"


class ProvidersConfig(_Section):
    telephony: str
    stt: str
    llm: str
    tts: str
    tools: list[str] = []


class PolicyConfig(_Section):
    """Turn-taking, barge-in, silence and tool timing."""

    barge_in_min_words: int = 2
    backchannels: list[str] = msgspec.field(default_factory=lambda: list(BACKCHANNELS))
    silence_reprompt_s: float = 8.0
    max_reprompts: int = 2
    max_call_s: float = 900.0
    max_tool_rounds: int = 5
    tool_timeout_s: float = 10.0
    filler_after_s: float = 1.0
    # Upper bound an LLM provider may use for its time to first token (it may go lower).
    llm_first_token_timeout_s: float = 5.0
    # No first token from the LLM after this long: a cached filler plays while it goes on.
    llm_filler_after_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.5
    apology_timeout_s: float = 5.0


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = 8080
    max_concurrent_calls: int = 50
    drain_timeout_s: float = 30.0


class AnalyticsConfig(_Section):
    enabled: bool = True
    database: str = "data/calls.duckdb"  # relative to the config file
    events: bool = True
    transcripts: bool = True
    caller_numbers: Literal["plain", "hashed", "drop"] = "plain"
    hash_salt_env: str = "HOOKLINE_HASH_SALT"


class PricesConfig(_Section):
    """Prices in US dollars, for the per-call cost estimate."""

    llm_input_per_million: float = 2.50
    llm_cached_input_per_million: float = 1.25
    llm_output_per_million: float = 10.00
    tts_per_thousand_chars: float = 0.030
    stt_per_minute: float = 0.0059
    telephony_per_minute: float = 0.0085


class Config(_Section):
    agent: AgentConfig
    providers: ProvidersConfig
    telephony: dict[str, dict[str, Any]] = {}
    stt: dict[str, dict[str, Any]] = {}
    llm: dict[str, dict[str, Any]] = {}
    tts: dict[str, dict[str, Any]] = {}
    tools: dict[str, dict[str, Any]] = {}
    policy: PolicyConfig = msgspec.field(default_factory=PolicyConfig)
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    analytics: AnalyticsConfig = msgspec.field(default_factory=AnalyticsConfig)
    prices: PricesConfig = msgspec.field(default_factory=PricesConfig)
    # Set by load_config, not read from the file.
    path: str = ""

    @property
    def base_dir(self) -> Path:
        return Path(self.path).parent if self.path else Path.cwd()

    def resolve_path(self, relative: str) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else self.base_dir / p


_PATH = re.compile(r" - at `\$((?:\.[^`\[]+|\[\d+\])*)`$")


def _explain(err: msgspec.ValidationError, root: type, prefix: str = "") -> tuple[str, str]:
    """Split msgspec's "Expected `int`, got `str` - at `$.a.b`" into (dotted key, message)."""
    text = str(err)
    key = prefix
    sub = ""
    m = _PATH.search(text)
    if m:
        text = text[: m.start()]
        sub = m.group(1).lstrip(".").replace("[", ".").replace("]", "")
        key = ".".join(p for p in (prefix, sub) if p)
    if text.startswith("Invalid enum value") and (allowed := _allowed(root, sub)):
        return key, f"{text[0].lower()}{text[1:]} (expected one of: {', '.join(allowed)})"
    if text.startswith("Object contains unknown field"):
        field = text.split("`")[1]
        key = ".".join(p for p in (key, field) if p)
        text = f"unknown key {field!r} (check the spelling; see the docs for this section)"
    elif text.startswith("Object missing required field"):
        field = text.split("`")[1]
        key = ".".join(p for p in (key, field) if p)
        text = f"required key {field!r} is missing"
    else:
        text = text[0].lower() + text[1:]
    return key, text


def _allowed(root: type, dotted: str) -> list[str]:
    """The values a Literal field at `dotted` (inside Struct `root`) accepts."""
    info: Any = msgspec.inspect.type_info(root)
    for part in dotted.split(".") if dotted else []:
        while isinstance(info, msgspec.inspect.UnionType):
            info = next(
                (t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)), None
            )
        if isinstance(info, msgspec.inspect.StructType):
            info = next((f.type for f in info.fields if f.encode_name == part), None)
        elif isinstance(info, msgspec.inspect.DictType):
            info = info.value_type
        else:
            return []
    while isinstance(info, msgspec.inspect.UnionType):
        info = next((t for t in info.types if isinstance(t, msgspec.inspect.LiteralType)), None)
    if isinstance(info, msgspec.inspect.LiteralType):
        return [repr(v) for v in info.values]
    return []


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and decode a config file; raise ConfigError naming the file and the key."""
    file = str(path)
    try:
        raw = tomllib.loads(Path(file).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("no such file", file=file) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}", file=file) from None
    if "path" in raw:
        raise ConfigError("unknown key 'path'", file=file, key="path")
    try:
        config = msgspec.convert(raw, type=Config)
    except msgspec.ValidationError as e:
        key, message = _explain(e, Config)
        raise ConfigError(message, file=file, key=key) from None
    config.path = file
    agent = config.agent
    if agent.instructions_file:
        instructions = config.resolve_path(agent.instructions_file)
        try:
            agent.instructions = instructions.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(
                f"cannot read {instructions}: {e.strerror}",
                file=file,
                key="agent.instructions_file",
            ) from None
    _check_timezone(agent.timezone, file)
    return config


def _check_timezone(name: str, file: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"unknown time zone {name!r} (use an IANA name like 'America/Chicago')",
            file=file,
            key="agent.timezone",
        ) from None


def decode_section(
    config: Config, dotted: str, raw: Mapping[str, Any] | None, settings: type[S]
) -> S:
    """Decode one provider or tool section (`stt.deepgram`) with the plugin's Struct."""
    try:
        return msgspec.convert(dict(raw or {}), type=settings)
    except msgspec.ValidationError as e:
        key, message = _explain(e, settings, dotted)
        raise ConfigError(message, file=config.path or None, key=key) from None


def secret_keys(settings: msgspec.Struct) -> dict[str, str]:
    """The `*_env` fields of a settings Struct: {field name: environment variable}."""
    return {
        name: value
        for name in settings.__struct_fields__
        if name.endswith("_env") and isinstance(value := getattr(settings, name), str) and value
    }


class Secrets:
    """Reads secrets from the environment, and only from there."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def get(self, env_var: str, *, key: str | None = None, file: str | None = None) -> str:
        value = self._environ.get(env_var, "")
        if not value:
            raise MissingSecret(env_var, key=key, file=file)
        return value

    def optional(self, env_var: str) -> str | None:
        return self._environ.get(env_var) or None

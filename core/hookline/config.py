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
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import msgspec.inspect

from .errors import ConfigError, MissingSecret

__all__ = [
    "MAX_SECONDS",
    "AgentConfig",
    "AnalyticsConfig",
    "Config",
    "DashboardConfig",
    "LoggingConfig",
    "MetricsConfig",
    "NonNegativeInt",
    "NonNegativeSeconds",
    "OutboxConfig",
    "PhoneNumber",
    "PolicyConfig",
    "Port",
    "PositiveInt",
    "Price",
    "PricesConfig",
    "ProvidersConfig",
    "RecordingConfig",
    "Seconds",
    "Secrets",
    "ServerConfig",
    "StorageConfig",
    "SummaryConfig",
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

# Ranges for numeric settings. Every numeric field of a settings Struct (core or plugin)
# uses one of these, so the decoder refuses what the runtime cannot run: `hookline check`
# and `hookline serve` decode through the same Structs and agree by construction. Bounds
# also keep out TOML's `inf` and `nan` (a socket timeout of `inf` raises OverflowError).
MAX_SECONDS = 86400.0  # no duration in a phone call runtime needs more than a day
Seconds = Annotated[float, msgspec.Meta(gt=0, le=MAX_SECONDS)]  # a timeout, an interval
NonNegativeSeconds = Annotated[float, msgspec.Meta(ge=0, le=MAX_SECONDS)]  # 0: at once
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]  # a count of things that must exist
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]  # a count that may be zero (retries)
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]  # 0: any free port
Price = Annotated[float, msgspec.Meta(ge=0, le=1e6)]  # US dollars per unit


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


# A phone number as E.164 ("+13125550100"): what Twilio sends and dials.
PhoneNumber = Annotated[str, msgspec.Meta(pattern=r"^\+[1-9][0-9]{6,14}$")]


class AgentConfig(_Section):
    """Who answers the phone. `instructions` (or the file `instructions_file` names) is a
    Jinja2 template rendered for every call (see hookline/prompt.py): it refers to the
    fields below and to the tool sets' settings instead of repeating them."""

    name: str = "hookline agent"
    instructions: str = ""
    instructions_file: str | None = None  # relative to the config file
    # The shop's street address and public phone number, as the agent may say them.
    address: str = ""
    phone: PhoneNumber | None = None
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

    barge_in_min_words: PositiveInt = 2
    backchannels: list[str] = msgspec.field(default_factory=lambda: list(BACKCHANNELS))
    silence_reprompt_s: Seconds = 8.0
    max_reprompts: NonNegativeInt = 2  # 0: hang up at the first silence, without asking
    max_call_s: Seconds = 900.0
    max_tool_rounds: PositiveInt = 5
    tool_timeout_s: Seconds = 10.0
    filler_after_s: NonNegativeSeconds = 1.0
    # Upper bound an LLM provider may use for its time to first token (it may go lower).
    llm_first_token_timeout_s: Seconds = 5.0
    # No first token from the LLM after this long: a cached filler plays while it goes on.
    llm_filler_after_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.5
    apology_timeout_s: Seconds = 5.0


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: Port = 8080
    max_concurrent_calls: PositiveInt = 50
    drain_timeout_s: NonNegativeSeconds = 30.0  # 0: hang up every call at once
    # How long start-up keeps retrying a provider that is unreachable (a 5xx, a refused
    # connection) before `hookline serve` gives up with one line and exit status 4.
    startup_timeout_s: Seconds = 60.0


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class LoggingConfig(_Section):
    """The console log of `hookline serve` (`--log-level`/`--log-format` win)."""

    level: LogLevel = "INFO"
    format: Literal["text", "json"] = "text"  # json: one object per line
    # Third-party libraries (httpx, openai, hpack, anycorn...): their per-request lines.
    libraries: LogLevel = "WARNING"


class MetricsConfig(_Section):
    """Prometheus metrics, on their own port so the public port never serves them."""

    enabled: bool = False
    host: str = "127.0.0.1"  # only this machine (a local Prometheus or agent) scrapes
    port: Port = 9464
    # How often the event-loop lag probe wakes up.
    lag_probe_interval_s: Annotated[float, msgspec.Meta(ge=0.05, le=60)] = 0.5


class AnalyticsConfig(_Section):
    enabled: bool = True
    database: str = "data/calls.duckdb"  # relative to the config file
    events: bool = True
    transcripts: bool = True
    caller_numbers: Literal["plain", "hashed", "drop"] = "plain"
    hash_salt_env: str = "HOOKLINE_HASH_SALT"
    # Finished calls of every process as Parquet files in one shared folder (readers see
    # them all at once): relative to the config file; "" = `segments/` beside the
    # database; "off" = none.
    segments: str = ""


class RecordingConfig(_Section):
    """Call recording through the telephony provider (Twilio's Recordings API). Off by
    default; when on, the caller is told: `disclosure` is spoken as part of the greeting
    (appended to `[agent] greeting`, so it is cached with it and the model knows it was
    said). Recordings are pruned with `hookline analytics prune`."""

    enabled: bool = False
    disclosure: str = "This call is recorded for quality and training."


class SummaryConfig(_Section):
    """The post-call summary: one LLM request per finished call with caller turns, run in
    the background (never in a call's path), stored in the `call_summaries` table."""

    enabled: bool = True
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 30.0  # the whole request
    # Answers longer than this (about 4 characters a token) are cut off and skipped.
    max_tokens: Annotated[int, msgspec.Meta(ge=50, le=4000)] = 400
    # The transcript sent is cut to its last this many characters (bounds the input cost).
    max_transcript_chars: Annotated[int, msgspec.Meta(ge=500, le=200_000)] = 12_000
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2  # summaries at once
    # Finished calls waiting for a summary; past this, a call's summary is skipped.
    backlog: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 200


class OutboxConfig(_Section):
    """Where notifications wait for delivery, and how hard the sender tries.

    `database`: the DuckDB file, relative to the config file; empty: `outbox.duckdb`
    beside the analytics database. A retryable failure (a 429, a 5xx, no answer) is
    tried again after `first_retry_s`, doubling up to `max_retry_s` (a channel's
    Retry-After replaces the computed wait), `max_attempts` tries in all."""

    database: str = ""
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 8
    first_retry_s: Seconds = 5.0
    max_retry_s: Seconds = 600.0
    send_timeout_s: Seconds = 15.0
    # The sender looks for due notifications at least this often (enqueue wakes it).
    poll_s: Seconds = 30.0
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4


class StorageConfig(_Section):
    """`[storage]`: where operational state lives (the outbox, taken messages, tow
    requests, the local calendar; see hookline/database.py and docs/storage.md).

    "duckdb" (the default): one DuckDB file per store beside the config, for one machine.
    "postgresql": every store in the PostgreSQL database whose URL is in the environment
    variable `url_variable` (`postgresql://user:password@host:5432/db`), shared by every
    process and machine. (Named `*_variable`, not `*_env`: `check` treats every `*_env`
    as a secret the config always needs.)"""

    backend: Literal["duckdb", "postgresql"] = "duckdb"
    url_variable: str = "HOOKLINE_DATABASE_URL"
    pool_size: Annotated[int, msgspec.Meta(ge=1, le=200)] = 10  # connections per process
    connect_timeout_s: Seconds = 10.0


class DashboardConfig(_Section):
    """`[dashboard]`: the web dashboard under /admin (see docs/dashboard.md).

    Nobody signs in until one credential source is set: a scrypt hash from
    `hookline dashboard hash-password` in the variable `password_hash_env`, or
    `trusted_header` naming the header an authenticating proxy in front sets (and strips
    from what callers send)."""

    enabled: bool = True
    password_hash_env: str = "HOOKLINE_DASHBOARD_PASSWORD_HASH"
    session_secret_env: str = "HOOKLINE_DASHBOARD_SECRET"  # unset: a new key per start
    trusted_header: str = ""  # e.g. "X-Forwarded-User"; only behind a proxy that sets it
    session_hours: Annotated[float, msgspec.Meta(gt=0, le=24 * 30)] = 12.0
    login_attempts: PositiveInt = 5  # failed sign-ins per client per 5 minutes
    refresh_s: Annotated[float, msgspec.Meta(ge=2, le=3600)] = 5.0  # Today's refresh


class PricesConfig(_Section):
    """Prices in US dollars, for the per-call cost estimate."""

    llm_input_per_million: Price = 2.50
    llm_cached_input_per_million: Price = 1.25
    llm_output_per_million: Price = 10.00
    tts_per_thousand_chars: Price = 0.030
    stt_per_minute: Price = 0.0059
    telephony_per_minute: Price = 0.0085


class Config(_Section):
    agent: AgentConfig
    providers: ProvidersConfig
    telephony: dict[str, dict[str, Any]] = {}
    stt: dict[str, dict[str, Any]] = {}
    llm: dict[str, dict[str, Any]] = {}
    tts: dict[str, dict[str, Any]] = {}
    tools: dict[str, dict[str, Any]] = {}
    # One section per notification channel (`[notifications.sms]`, `[notifications.
    # webhook]`), decoded with its plugin's Struct; a channel is on when its section is.
    notifications: dict[str, dict[str, Any]] = {}
    policy: PolicyConfig = msgspec.field(default_factory=PolicyConfig)
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    analytics: AnalyticsConfig = msgspec.field(default_factory=AnalyticsConfig)
    prices: PricesConfig = msgspec.field(default_factory=PricesConfig)
    recording: RecordingConfig = msgspec.field(default_factory=RecordingConfig)
    summary: SummaryConfig = msgspec.field(default_factory=SummaryConfig)
    outbox: OutboxConfig = msgspec.field(default_factory=OutboxConfig)
    storage: StorageConfig = msgspec.field(default_factory=StorageConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    dashboard: DashboardConfig = msgspec.field(default_factory=DashboardConfig)
    # Set by load_config, not read from the file.
    path: str = ""

    def __post_init__(self) -> None:
        # A recorded call tells the caller in the greeting itself: one cached phrase, heard
        # before anything else, and in the history so the model knows it was said.
        disclosure = self.recording.disclosure.strip()
        greeting = self.agent.greeting
        if self.recording.enabled and disclosure and not greeting.endswith(disclosure):
            self.agent.greeting = f"{greeting} {disclosure}" if greeting else disclosure

    @property
    def base_dir(self) -> Path:
        return Path(self.path).parent if self.path else Path.cwd()

    def resolve_path(self, relative: str) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else self.base_dir / p

    @property
    def analytics_segments(self) -> Path | None:
        """The shared Parquet segments folder (`[analytics] segments`), None when off."""
        value = self.analytics.segments.strip()
        if value == "off":
            return None
        if value:
            return self.resolve_path(value)
        return self.resolve_path(self.analytics.database).parent / "segments"

    @property
    def outbox_database(self) -> Path:
        """The outbox's DuckDB file: `[outbox] database`, or beside the analytics one."""
        if self.outbox.database:
            return self.resolve_path(self.outbox.database)
        return self.resolve_path(self.analytics.database).parent / "outbox.duckdb"


# msgspec's path: `.name` for a field, `[3]` for a list item, `[...]` for a dict value.
_PATH = re.compile(r" - at `\$((?:\.[^`\[]+|\[\d+\]|\[\.\.\.\])*)`$")


def _explain(err: msgspec.ValidationError, root: type, prefix: str = "") -> tuple[str, str]:
    """Split msgspec's "Expected `int`, got `str` - at `$.a.b`" into (dotted key, message)."""
    text = str(err)
    key = prefix
    sub = ""
    m = _PATH.search(text)
    if m:
        text = text[: m.start()]
        sub = m.group(1).replace("[...]", "").lstrip(".").replace("[", ".").replace("]", "")
        key = ".".join(p for p in (prefix, sub) if p)
    if text.startswith("Invalid enum value") and (allowed := _allowed(root, sub)):
        return key, f"{text[:1].lower()}{text[1:]} (expected one of: {', '.join(allowed)})"
    if text.startswith("Object contains unknown field"):
        field = text[text.index("`") + 1 : text.rindex("`")]
        key = ".".join(p for p in (key, field) if p)
        text = f"unknown key {field!r} (check the spelling; see the docs for this section)"
    elif text.startswith("Object missing required field"):
        field = text[text.index("`") + 1 : text.rindex("`")]
        key = ".".join(p for p in (key, field) if p)
        text = f"required key {field!r} is missing"
    else:
        text = text[:1].lower() + text[1:]
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
    text = _read_text(Path(file), file=file)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}", file=file) from None
    except RecursionError:
        raise ConfigError("not valid TOML: arrays or tables nested too deeply", file=file) from None
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
        agent.instructions = _read_text(
            instructions, file=file, key="agent.instructions_file", what=f"{instructions}: "
        )
    _check_timezone(agent.timezone, file)
    return config


def _read_text(path: Path, *, file: str, key: str | None = None, what: str = "") -> str:
    """A UTF-8 text file's contents, or a one-line ConfigError saying why not.

    `what` prefixes the reason when the file read is not the config file itself.
    """
    try:
        # Only a regular file: a FIFO or a device ("/dev/zero") would block or never end.
        if not stat.S_ISREG(path.stat().st_mode):
            kind = "a directory, not a file" if path.is_dir() else "not a regular file"
            raise ConfigError(f"{what}is {kind}", file=file, key=key)
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what}no such file", file=file, key=key) from None
    except OSError as e:  # a directory, no permission, an I/O error
        raise ConfigError(f"{what}cannot read: {e.strerror or e}", file=file, key=key) from None
    except ValueError as e:  # a NUL byte in the path
        raise ConfigError(f"{what}cannot read: {e}", file=file, key=key) from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # what Windows tools call "Unicode"
        raise ConfigError(f"{what}is UTF-16 text; save it as UTF-8", file=file, key=key)
    try:
        return data.decode("utf-8-sig")  # a UTF-8 byte order mark (Notepad) is dropped
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{what}is not UTF-8 text (byte {e.start} is {data[e.start]:#04x}); save it as UTF-8",
            file=file,
            key=key,
        ) from None


def _check_timezone(name: str, file: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # "America" is a directory
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

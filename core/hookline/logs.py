"""Logging with the call id: every line about a call says which call it is about, once.

Library code logs through `call_log(logger, call_id)`, which puts the id on the record
(`record.call_id`), not into the message. The command line's handler (`configure`) shows
it: as `[call <id>]` before the message in text, as the `call_id` field in JSON (one
object per line, for log shippers). Third-party libraries' loggers (httpx's request
lines, the OpenAI SDK, hpack, anycorn) stay at WARNING unless asked otherwise.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, Literal

import msgspec

if TYPE_CHECKING:
    from .config import LoggingConfig
    from .runtime import Runtime

__all__ = [
    "LIBRARY_LOGGERS",
    "CallLog",
    "JsonFormatter",
    "TextFormatter",
    "call_log",
    "configure",
    "configure_from_config",
    "shown_number",
]

LogFormat = Literal["text", "json"]

# Loggers of libraries whose INFO lines are noise in an operator's log (one line per
# HTTP request, per HTTP/2 frame, per SDK retry): quiet at WARNING by default.
LIBRARY_LOGGERS = (
    "httpx", "httpcore", "openai", "hpack", "h2", "h11", "anycorn", "hypercorn",
    "trio-websocket", "websockets", "deepgram", "googleapiclient", "google", "urllib3",
    "httplib2", "duckdb",
)  # fmt: skip


class CallLog(logging.LoggerAdapter):
    """Puts the call id on every record as `call_id` (the formatter shows it)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        call_id = self.extra["call_id"] if self.extra else None
        kwargs.setdefault("extra", {})["call_id"] = call_id
        return msg, kwargs


def call_log(logger: logging.Logger | str, call_id: str) -> CallLog:
    """`call_log("hookline.stt.deepgram", call.call_id).info(...)`"""
    if isinstance(logger, str):
        logger = logging.getLogger(logger)
    return CallLog(logger, {"call_id": call_id})


def _call_id(record: logging.LogRecord) -> str | None:
    call_id = getattr(record, "call_id", None)
    return None if call_id in (None, "", "-") else str(call_id)  # "-": not yet known


class TextFormatter(logging.Formatter):
    """`2026-11-30 11:02:03,456 INFO hookline.engine [call 7f3a] call started ...`"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        call_id = _call_id(record)
        if call_id:
            record.message = f"[call {call_id}] {record.message}"
        return super().formatMessage(record)


class _JsonLine(msgspec.Struct, omit_defaults=True):
    ts: str
    level: str
    logger: str
    call_id: str | None
    message: str
    exc: str | None = None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601), level, logger, call_id, message,
    and exc (the traceback) when there is one."""

    _encode = msgspec.json.Encoder().encode

    def format(self, record: logging.LogRecord) -> str:
        exc = None
        if record.exc_info:
            exc = self.formatException(record.exc_info)
        elif record.exc_text:
            exc = record.exc_text
        line = _JsonLine(
            ts=dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            level=record.levelname,
            logger=record.name,
            call_id=_call_id(record),
            message=record.getMessage(),
            exc=exc,
        )
        return self._encode(line).decode()


class _HooklineHandler(logging.StreamHandler):
    """The one console handler `configure` installs (and replaces on a second call).

    Without a stream of its own it writes to whatever `sys.stderr` is at the time of
    the write, so a host that swaps stderr (pytest's capture) never leaves it writing
    to a closed one."""

    def __init__(self, stream: Any = None) -> None:
        self._own_stream = stream
        super().__init__(stream)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return self._own_stream if self._own_stream is not None else sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        self._own_stream = None if value is sys.stderr else value


# What the command line chose explicitly: the config file does not override it.
_explicit: dict[str, str] = {}


def configure(
    level: str | None = None,
    fmt: LogFormat | None = None,
    *,
    libraries: str = "WARNING",
    stream: Any = None,
) -> None:
    """Install the console handler on the root logger. `level`/`fmt` given here (from
    the command line) win over the config file's `[logging]` (see configure_from_config)."""
    _explicit.clear()
    if level:
        _explicit["level"] = level.upper()
    if fmt:
        _explicit["format"] = fmt
    _install(_explicit.get("level", "INFO"), _explicit.get("format", "text"), libraries, stream)


def configure_from_config(cfg: LoggingConfig) -> None:
    """Apply `[logging]` from the config, except what the command line set."""
    level = _explicit.get("level", cfg.level)
    fmt = _explicit.get("format", cfg.format)
    _install(level, fmt, cfg.libraries, None)  # type: ignore[arg-type]


def _install(level: str, fmt: str, libraries: str, stream: Any) -> None:
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _HooklineHandler)]
    if stream is None and not ours and root.handlers:
        # A host program (or pytest) configured logging before us: its handlers and
        # levels stay as they are, as `logging.basicConfig` would leave them.
        return
    for handler in ours:
        root.removeHandler(handler)
    if stream is None and ours:
        stream = ours[0]._own_stream  # None: whatever sys.stderr is when writing
    handler = _HooklineHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(libraries.upper())


def shown_number(number: str | None, runtime: Runtime) -> str:
    """A phone number as a log line may show it: the log keeps no more than the database.

    `[analytics] caller_numbers = "hashed"` shows the start of the same salted hash the
    `calls` table holds (enough to find the row), "drop" shows no number at all.
    """
    cfg = runtime.config.analytics
    if not number:
        return "unknown"
    if cfg.caller_numbers == "plain":
        return number
    salt = runtime.secrets.optional(cfg.hash_salt_env)
    if cfg.caller_numbers == "drop" or salt is None:
        return "(number withheld)"
    from .analytics.rows import hash_number  # the database's hash, not a second one

    return "#" + hash_number(number, salt.encode())[:12]

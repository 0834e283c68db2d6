"""Logging with the call id: every line about a call says which call it is about, once.

Library code logs through `call_log(logger, call_id)`, which puts the id on the record
(`record.call_id`), not into the message. The command line's handler (`configure`) shows
it: as `[call <id>]` before the message in text, as the `call_id` field in JSON (one
object per line, for log shippers). Third-party libraries' loggers (httpx's request
lines, the OpenAI SDK, hpack, anycorn) stay at WARNING unless asked otherwise.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import queue
import sys
import threading
import time
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, Literal

import msgspec

if TYPE_CHECKING:
    from .config import LoggingConfig
    from .runtime import Runtime

__all__ = [
    "LIBRARY_LOGGERS",
    "QUEUED_LINES",
    "CallLog",
    "JsonFormatter",
    "TextFormatter",
    "call_log",
    "configure",
    "configure_from_config",
    "shown_number",
]

LogFormat = Literal["text", "json"]

# Lines waiting for the log output before further ones are dropped (and counted).
QUEUED_LINES = 10_000
# How long exit (and a reconfiguration) waits for queued lines to be written.
EXIT_WAIT_S = 2.0

# Loggers of libraries whose INFO lines are noise in an operator's log (one line per
# HTTP request, per HTTP/2 frame, per SDK retry): quiet at WARNING by default. httpx2 and
# httpcore2 are the HTTP stack of the OpenAI SDK 3.x.
LIBRARY_LOGGERS = (
    "httpx", "httpcore", "httpx2", "httpcore2", "openai", "hpack", "h2", "h11", "anycorn",
    "hypercorn", "trio-websocket", "websockets", "deepgram", "googleapiclient", "google",
    "urllib3", "httplib2", "duckdb",
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


class _HooklineHandler(logging.Handler):
    """The one console handler `configure` installs (and replaces on a second call).

    A log line must never stop the thread that logs it: in `hookline serve` that is the
    trio thread carrying every call's audio, and a stderr that stops taking lines (a
    stuck log shipper; Docker's default log mode blocks the writer when its driver falls
    behind; a full pipe) would otherwise freeze every call at the next line. So `emit`
    only queues the record, and one writer thread formats and writes it. When
    QUEUED_LINES are waiting, further lines are dropped, counted, and the count is
    written once the output takes lines again. At exit (`logging.shutdown`) the queue
    gets EXIT_WAIT_S to drain: lines still queued behind an output that takes nothing
    are lost then.

    Not the stdlib's QueueListener: its stop() waits without a bound for a stuck stream,
    and its sentinel cannot be queued when a bounded queue is full."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__()
        # Without a stream of its own it writes to whatever `sys.stderr` is at the time
        # of the write, so a host that swaps stderr (pytest's capture) never leaves it
        # writing to a closed one.
        self.own_stream = stream
        self._queue: queue.Queue[logging.LogRecord | threading.Event | None] = queue.Queue(
            QUEUED_LINES
        )
        self._dropped = 0  # only emit() adds (under this handler's lock)
        self._told = 0  # only the writer reads it
        self._stuck = False  # the output took nothing for EXIT_WAIT_S: do not wait again
        self._writer = threading.Thread(target=self._write_lines, name="hookline-log", daemon=True)
        self._writer.start()

    def emit(self, record: logging.LogRecord) -> None:
        # Resolved now, on the logging thread: the arguments may change after this call
        # returns, and a traceback would keep the frames it names alive in the queue. A
        # copy, so that another handler of the same record still sees it whole.
        record = copy.copy(record)
        record.msg = record.getMessage()
        record.args = None
        if record.exc_info:
            record.exc_text = (self.formatter or logging.Formatter()).formatException(
                record.exc_info
            )
            record.exc_info = None
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._dropped += 1

    def _write_lines(self) -> None:
        while (item := self._queue.get()) is not None:
            if isinstance(item, threading.Event):  # flush(): everything before it is out
                item.set()
                continue
            dropped = self._dropped
            if dropped > self._told:
                self._write(_dropped_notice(dropped - self._told))
                self._told = dropped
            self._write(item)

    def _write(self, record: logging.LogRecord) -> None:
        # No lock is held while writing (a logging.StreamHandler would hold its own, and
        # `logging.shutdown` takes every handler's lock at exit: a stuck write would
        # then hang the exit).
        try:
            stream = self.own_stream if self.own_stream is not None else sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        """Wait until every line queued so far is written (see `_wait_for_writer`)."""
        self._wait_for_writer(threading.Event())

    def close(self) -> None:
        """Write what is queued, then stop the writer (see `_wait_for_writer`)."""
        self._wait_for_writer(None)
        super().close()

    def _wait_for_writer(self, marker: threading.Event | None) -> None:
        """Queue `marker` (an Event: set once reached; None: the writer stops there) and
        wait for the writer to reach it, EXIT_WAIT_S at most. An output that took nothing
        for that long is not waited for again (exit flushes, then closes)."""
        if self._stuck:
            return
        deadline = time.monotonic() + EXIT_WAIT_S
        try:
            self._queue.put(marker, timeout=EXIT_WAIT_S)
            if marker is None:
                self._writer.join(max(0.0, deadline - time.monotonic()))
                reached = not self._writer.is_alive()
            else:
                reached = marker.wait(max(0.0, deadline - time.monotonic()))
        except queue.Full:
            reached = False
        self._stuck = not reached


def _dropped_notice(count: int) -> logging.LogRecord:
    return logging.getLogger(__name__).makeRecord(
        __name__,
        logging.WARNING,
        __file__,
        0,
        f"{count} log lines dropped: the log output did not take them in time",
        None,
        None,
    )


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
        handler.close()  # its queued lines are written first
    if stream is None and ours:
        stream = ours[0].own_stream  # None: whatever sys.stderr is when writing
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

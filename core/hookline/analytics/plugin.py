"""The built-in analytics observer: every call's story into DuckDB.

Registered through the `hookline` entry-point group like any third-party plugin.

One process may hold several runtimes (tests do), each with its own config and database,
so each started runtime gets a `RuntimeSink` and the call hooks find it through the
`runtime` argument: nothing is shared between runtimes but the writer of a database file
they both name. The hooks only put objects on the writer's queue: no I/O on the trio
thread.
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING

import trio

from ..events import CallEvent, CallRecord
from ..hookspecs import hookimpl
from ..providers import CallInfo
from .rows import Privacy, Shaper
from .writer import Writer, acquire, release

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["RuntimeSink", "sink_for"]

log = logging.getLogger("hookline.analytics")

_sinks: weakref.WeakKeyDictionary[Runtime, RuntimeSink] = weakref.WeakKeyDictionary()


class RuntimeSink:
    """One runtime's connection to its database writer."""

    def __init__(self, writer: Writer, shaper: Shaper) -> None:
        self.writer = writer
        self.shaper = shaper

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Block until what was queued so far is written, or kept in memory for a retry
        while the storage fails (`writer.problem`). Not for the trio thread."""
        return self.writer.flush(timeout)

    async def wait_flushed(self) -> None:
        """Wait, off the trio thread, until what was queued so far is written."""
        await trio.to_thread.run_sync(self.writer.flush)


def sink_for(runtime: Runtime) -> RuntimeSink | None:
    """The analytics sink of a started runtime (None when analytics is off)."""
    return _sinks.get(runtime)


def _shaper(runtime: Runtime) -> Shaper:
    cfg = runtime.config.analytics
    salt = b""
    if cfg.caller_numbers == "hashed":
        # MissingSecret names the key and the variable: start-up stops with one line.
        salt = runtime.secret(cfg.hash_salt_env, key="analytics.hash_salt_env").encode()
    models = {}
    for kind, settings in runtime.resolved.provider_settings.items():
        model = getattr(settings, "model", None)
        if isinstance(model, str) and model:
            models[kind] = model
    return Shaper(
        privacy=Privacy(numbers=cfg.caller_numbers, salt=salt, transcripts=cfg.transcripts),
        prices=runtime.config.prices,
        providers={k: str(v) for k, v in runtime.provider_names.items()},
        models=models,
        store_events=cfg.events,
    )


@hookimpl
def hookline_call_started(runtime: Runtime, call: CallInfo, started: float) -> None:
    if sink := _sinks.get(runtime):
        sink.writer.call_started(sink.shaper, call, started)


@hookimpl
def hookline_call_event(runtime: Runtime, call: CallInfo, event: CallEvent) -> None:
    if sink := _sinks.get(runtime):
        sink.writer.call_event(sink.shaper, call, event)


@hookimpl
def hookline_call_ended(runtime: Runtime, call: CallInfo, record: CallRecord) -> None:
    if sink := _sinks.get(runtime):
        sink.writer.call_ended(sink.shaper, call, record)


@hookimpl
def hookline_health(runtime: Runtime) -> str | None:
    """Not ready while the database cannot be written (rows wait in memory meanwhile)."""
    sink = _sinks.get(runtime)
    return sink.writer.problem if sink else None


@hookimpl
def hookline_runtime_started(runtime: Runtime) -> None:
    """Open (create, migrate, recover) the database and attach a sink to this runtime."""
    cfg = runtime.config.analytics
    if not cfg.enabled or runtime in _sinks:
        return
    shaper = _shaper(runtime)
    writer = acquire(
        runtime.config.resolve_path(cfg.database),
        where=runtime.config.path,
        segments=runtime.config.analytics_segments,
    )
    _sinks[runtime] = RuntimeSink(writer, shaper)
    log.info("analytics: recording calls in %s", writer.path)


@hookimpl
def hookline_runtime_stopping(runtime: Runtime) -> None:
    """Flush pending rows and close the database (when no other runtime still uses it)."""
    detach(runtime)


def detach(runtime: Runtime, *, abandon: bool = False) -> None:
    """Detach this runtime's sink; `abandon=True` drops pending rows as a crash would."""
    sink = _sinks.pop(runtime, None)
    if sink is None:
        return
    if sink.writer.dropped_events:
        log.warning("analytics: %d events were dropped under load", sink.writer.dropped_events)
    if sink.writer.dropped_rows:
        log.warning(
            "analytics: %d rows were dropped while %s could not be written",
            sink.writer.dropped_rows, sink.writer.path,
        )  # fmt: skip
    release(sink.writer, abandon=abandon)

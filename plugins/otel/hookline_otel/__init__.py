"""hookline's OpenTelemetry observer: each call becomes one trace, exported over OTLP/HTTP.

Install `hookline-otel` and point the standard variables at a collector:

    OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 hookline serve config.toml

Without an endpoint the plugin stays idle (see `hookline_otel.settings` for every
variable read). Spans and their attributes are described in `hookline_otel.spans`.

Threads: the hooks run on the trio thread and never wait. A call's events are kept in a
list; when it ends, the call goes on a queue to this plugin's builder thread
(`hookline-otel-spans`), which builds its spans and ends them into the SDK's
BatchSpanProcessor. That processor only appends to a deque and at most sets a
`threading.Event`; encoding and the HTTP POST (with the exporter's bounded retries) run
on the processor's own daemon thread, `OtelBatchSpanRecordProcessor`. At
`hookline_runtime_stopping` the pipeline is shut down, not force-flushed: the SDK's
`force_flush` would run the export on the calling (trio) thread with no time limit,
while `shutdown` lets the worker send what is queued; we wait for that at most
`shutdown_timeout_s`. A collector that is down or slow costs log lines, never a call.
"""

from __future__ import annotations

import logging
import queue
import threading
import weakref
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import trio
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.util.re import parse_env_headers

from hookline import (
    CallEvent,
    CallInfo,
    CallRecord,
    PricesConfig,
    Privacy,
    call_log,
    estimate_cost,
    hookimpl,
    shown_number,
)

from .settings import OtelSettings
from .spans import CallTrace, Redaction, emit_rejected, emit_trace

# Observer hooks receive the runtime object; it is not part of the public API, so this
# plugin keeps to what it reads (`secrets`, `config.analytics`, `config.prices`).
Runtime = Any

__all__ = ["OtelSettings", "Tracing", "attach", "detach", "tracing_for"]

__version__ = "0.1.0"

log = logging.getLogger("hookline.otel")


@dataclass(frozen=True)
class _Ended:
    """A finished call, handed to the span builder thread."""

    record: CallRecord
    trace: CallTrace | None  # None: rejected before it started
    ended_monotonic: float
    from_number: str  # as the logs show it
    to_number: str


class Tracing:
    """One runtime's trace pipeline: its open calls, span builder thread, tracer provider
    and batch processor.

    The provider is this runtime's own, never the process-wide global one: an embedding
    application keeps its tracing, and two runtimes in one process (tests) stay apart.
    Spans are built on a thread of their own: a long call is hundreds of spans (about
    50 ms of Python on a busy 2-core machine for 60 exchanges), which on the trio thread
    would stall every other call's audio; on another thread the interpreter hands the
    trio thread back every switch interval (5 ms).
    """

    def __init__(
        self,
        settings: OtelSettings,
        exporter: SpanExporter,
        *,
        privacy: Privacy | None = None,
        prices: PricesConfig | None = None,
    ) -> None:
        self.settings = settings
        self.exporter = exporter
        self.privacy = privacy or Privacy()
        self.prices = prices or PricesConfig()
        self.processor = BatchSpanProcessor(exporter)
        # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win; "hookline" when neither names it.
        resource = Resource.create({SERVICE_VERSION: version("hookline")})
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: "hookline"}))
        self.provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("hookline_otel", __version__)
        self.calls: dict[str, CallTrace] = {}  # by call id, while the call runs (trio thread)
        self._ended: queue.SimpleQueue[_Ended | None] = queue.SimpleQueue()
        self._builder = threading.Thread(
            target=self._build_all, name="hookline-otel-spans", daemon=True
        )
        self._builder.start()

    def call_ended(self, ended: _Ended) -> None:
        """Queue a finished call for the builder thread (never blocks)."""
        self._ended.put(ended)

    def _build_all(self) -> None:
        while (ended := self._ended.get()) is not None:
            try:
                self._build(ended)
            except Exception:
                cid = ended.record.call_id
                call_log(log, cid).exception("otel: could not build the call's trace")

    def _build(self, ended: _Ended) -> None:
        record = ended.record
        redaction = Redaction(
            from_number=ended.from_number,
            to_number=ended.to_number,
            transcripts=self.settings.include_transcripts,
            scrub=self.privacy.redactor((record.from_number, record.to_number)),
        )
        c = estimate_cost(record.usage, record.duration, self.prices)
        cost = {
            "total": c.total,
            "llm": c.llm,
            "tts": c.tts,
            "stt": c.stt,
            "telephony": c.telephony,
        }
        if ended.trace is None:
            emit_rejected(self.tracer, record, redaction, cost)
        else:
            emit_trace(self.tracer, ended.trace, record, ended.ended_monotonic, redaction, cost)

    def shutdown(self) -> None:
        """Build what is queued and send it, waiting at most `shutdown_timeout_s`."""
        if self.calls:
            log.warning("otel: %d calls still open at shutdown; not traced", len(self.calls))
            self.calls.clear()
        self._ended.put(None)
        # The SDK's shutdown waits up to 30 s for its worker (an export hung on a silent
        # collector): it runs on a thread of its own, and we wait for it a bounded time.
        closer = threading.Thread(target=self._close, name="hookline-otel-shutdown", daemon=True)
        closer.start()
        closer.join(self.settings.shutdown_timeout_s)
        if closer.is_alive():
            log.warning(
                "otel: the collector at %s did not take the last spans within %.0f s;"
                " they may be lost",
                self.settings.endpoint, self.settings.shutdown_timeout_s,
            )  # fmt: skip

    def _close(self) -> None:
        self._builder.join()
        self.provider.shutdown()  # the batch processor's worker sends the rest, then stops


_tracings: weakref.WeakKeyDictionary[Runtime, Tracing] = weakref.WeakKeyDictionary()


def tracing_for(runtime: Runtime) -> Tracing | None:
    """The trace pipeline of a started runtime (None when tracing is off)."""
    return _tracings.get(runtime)


def otlp_exporter(settings: OtelSettings, runtime: Runtime) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    raw = runtime.secrets.optional(settings.headers_env) or ""
    headers = dict(parse_env_headers(raw, liberal=True)) if raw else None
    return OTLPSpanExporter(endpoint=settings.endpoint, headers=headers)


def _privacy(runtime: Runtime) -> Privacy:
    """Numbers in span texts replaced as analytics replaces them in stored texts."""
    cfg = runtime.config.analytics
    numbers = cfg.caller_numbers
    salt = runtime.secrets.optional(cfg.hash_salt_env)
    if numbers == "hashed" and salt is None:
        numbers = "drop"  # as shown_number does: no salt, no hash anyone could reverse
    return Privacy(numbers=numbers, salt=(salt or "").encode())


def attach(
    runtime: Runtime, settings: OtelSettings, exporter: SpanExporter | None = None
) -> Tracing:
    """Trace this runtime's calls; `exporter` defaults to OTLP/HTTP at `settings.endpoint`."""
    detach(runtime)
    tracing = Tracing(
        settings,
        exporter or otlp_exporter(settings, runtime),
        privacy=_privacy(runtime),
        prices=runtime.config.prices,
    )
    _tracings[runtime] = tracing
    return tracing


def detach(runtime: Runtime) -> None:
    """Stop tracing this runtime: queued spans are sent (bounded wait), then it closes."""
    tracing = _tracings.pop(runtime, None)
    if tracing is not None:
        tracing.shutdown()


@hookimpl
def hookline_runtime_started(runtime: Runtime) -> None:
    settings = OtelSettings.from_environ(runtime.secrets.optional)
    if settings is None or runtime in _tracings:
        return
    attach(runtime, settings)
    log.info("otel: exporting call traces to %s", settings.endpoint)


@hookimpl
def hookline_runtime_stopping(runtime: Runtime) -> None:
    detach(runtime)


@hookimpl
def hookline_call_started(runtime: Runtime, call: CallInfo, started: float) -> None:
    if tracing := _tracings.get(runtime):
        tracing.calls[call.call_id] = CallTrace(started, trio.current_time())


@hookimpl
def hookline_call_event(runtime: Runtime, call: CallInfo, event: CallEvent) -> None:
    if (tracing := _tracings.get(runtime)) and (trace := tracing.calls.get(call.call_id)):
        trace.events.append(event)


@hookimpl
def hookline_call_ended(runtime: Runtime, call: CallInfo, record: CallRecord) -> None:
    tracing = _tracings.get(runtime)
    if tracing is None:
        return
    trace = tracing.calls.pop(call.call_id, None)
    tracing.call_ended(
        _Ended(
            record=record,
            trace=trace,
            ended_monotonic=trio.current_time() if trace is not None else 0.0,
            from_number=shown_number(record.from_number, runtime),
            to_number=shown_number(record.to_number, runtime),
        )
    )

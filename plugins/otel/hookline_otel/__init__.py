"""hookline's OpenTelemetry observer: each call becomes one trace, exported over OTLP/HTTP.

Install `hookline-otel` and point the standard variables at a collector:

    OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 hookline serve config.toml

Without an endpoint the plugin stays idle (see `hookline_otel.settings` for every
variable read). Spans and their attributes are described in `hookline_otel.spans`.

Threads: the hooks run on the trio thread and never wait on the network. A call's events
are kept in a list; when it ends its spans are built and handed to the SDK's
BatchSpanProcessor, which only appends them to a deque and at most sets a
`threading.Event`. Encoding and the HTTP POST (with the exporter's bounded retries)
happen on the processor's own daemon thread, `OtelBatchSpanRecordProcessor`. At
`hookline_runtime_stopping` the processor is shut down, not force-flushed: the SDK's
`force_flush` would run the export on the calling (trio) thread with no time limit,
while `shutdown` lets the worker thread send what is queued and waits for it at most
`shutdown_timeout_s`. A collector that is down or slow costs log lines, never a call.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import TYPE_CHECKING

import trio
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.util.re import parse_env_headers

import hookline
from hookline.analytics.rows import Privacy, estimate_cost
from hookline.events import CallEvent, CallRecord
from hookline.hookspecs import hookimpl
from hookline.logs import call_log, shown_number
from hookline.providers import CallInfo

from .settings import OtelSettings
from .spans import CallTrace, Redaction, emit_rejected, emit_trace

if TYPE_CHECKING:
    from hookline.runtime import Runtime

__all__ = ["OtelSettings", "Tracing", "attach", "detach", "tracing_for"]

__version__ = "0.1.0"

log = logging.getLogger("hookline.otel")


class Tracing:
    """One runtime's trace pipeline: its tracer provider, processor and open calls.

    The provider is this runtime's own, never the process-wide global one: an embedding
    application keeps its tracing, and two runtimes in one process (tests) stay apart.
    """

    def __init__(self, settings: OtelSettings, exporter: SpanExporter) -> None:
        self.settings = settings
        self.exporter = exporter
        self.processor = BatchSpanProcessor(exporter)
        # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win; "hookline" when neither names it.
        resource = Resource.create({SERVICE_VERSION: hookline.__version__})
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: "hookline"}))
        self.provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("hookline_otel", __version__)
        self.calls: dict[str, CallTrace] = {}  # by call id, while the call runs

    def shutdown(self) -> None:
        """Send what is queued from the processor's thread, waiting for it a bounded time."""
        if self.calls:
            log.warning("otel: %d calls still open at shutdown; not traced", len(self.calls))
            self.calls.clear()
        # The SDK's shutdown waits up to 30 s for its worker (an export hung on a silent
        # collector): it runs on a thread of its own, and we wait for it a bounded time.
        closer = threading.Thread(
            target=self.provider.shutdown, name="hookline-otel-shutdown", daemon=True
        )
        closer.start()
        closer.join(self.settings.shutdown_timeout_s)
        if closer.is_alive():
            log.warning(
                "otel: the collector at %s did not take the last spans within %.0f s;"
                " they may be lost",
                self.settings.endpoint, self.settings.shutdown_timeout_s,
            )  # fmt: skip


_tracings: weakref.WeakKeyDictionary[Runtime, Tracing] = weakref.WeakKeyDictionary()


def tracing_for(runtime: Runtime) -> Tracing | None:
    """The trace pipeline of a started runtime (None when tracing is off)."""
    return _tracings.get(runtime)


def otlp_exporter(settings: OtelSettings, runtime: Runtime) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    raw = runtime.secrets.optional(settings.headers_env) or ""
    headers = dict(parse_env_headers(raw, liberal=True)) if raw else None
    return OTLPSpanExporter(endpoint=settings.endpoint, headers=headers)


def attach(
    runtime: Runtime, settings: OtelSettings, exporter: SpanExporter | None = None
) -> Tracing:
    """Trace this runtime's calls; `exporter` defaults to OTLP/HTTP at `settings.endpoint`."""
    detach(runtime)
    tracing = Tracing(settings, exporter or otlp_exporter(settings, runtime))
    _tracings[runtime] = tracing
    return tracing


def detach(runtime: Runtime) -> None:
    """Stop tracing this runtime: queued spans are sent (bounded wait), then it closes."""
    tracing = _tracings.pop(runtime, None)
    if tracing is not None:
        tracing.shutdown()


def _redaction(runtime: Runtime, settings: OtelSettings, record: CallRecord) -> Redaction:
    """The numbers as the logs show them; texts scrubbed of them as analytics does."""
    cfg = runtime.config.analytics
    numbers = cfg.caller_numbers
    salt = runtime.secrets.optional(cfg.hash_salt_env)
    if numbers == "hashed" and salt is None:
        numbers = "drop"  # as shown_number does: no salt, no hash anyone could reverse
    privacy = Privacy(numbers=numbers, salt=(salt or "").encode())
    return Redaction(
        from_number=shown_number(record.from_number, runtime),
        to_number=shown_number(record.to_number, runtime),
        transcripts=settings.include_transcripts,
        scrub=privacy.redactor((record.from_number, record.to_number)),
    )


def _cost(runtime: Runtime, record: CallRecord) -> dict[str, float]:
    cost = estimate_cost(record.usage, record.duration, runtime.config.prices)
    return {
        "total": cost.total,
        "llm": cost.llm,
        "tts": cost.tts,
        "stt": cost.stt,
        "telephony": cost.telephony,
    }


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
    trace = tracing.calls.pop(call.call_id, None)  # first: a failure below leaks nothing
    try:
        redaction = _redaction(runtime, tracing.settings, record)
        cost = _cost(runtime, record)
        if trace is None:  # rejected before it started
            emit_rejected(tracing.tracer, record, redaction, cost)
        else:
            emit_trace(tracing.tracer, trace, record, trio.current_time(), redaction, cost)
    except Exception:
        call_log(log, call.call_id).exception("otel: could not build the call's trace")

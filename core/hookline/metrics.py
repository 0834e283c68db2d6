"""Prometheus metrics: the built-in observer that feeds one `CollectorRegistry` per
runtime, served by `hookline serve` on its own port when `[metrics] enabled`.

Registered through the `hookline` entry-point group like analytics. Each started runtime
gets its own registry (a process may hold several runtimes: tests do), so nothing is
shared through prometheus-client's global default registry.

What is measured (names as scraped):

- `hookline_active_calls`: calls in progress now.
- `hookline_calls_total{reason}`: calls ended, by end reason ("caller_hangup",
  "provider_failed:tts/deepgram", "rejected:busy"...; "error:<what>" is counted as
  "error" so a label never holds free text).
- `hookline_admissions_refused_total{reason}`: callers turned away ("busy": every line
  taken; "draining": the server is stopping).
- `hookline_requests_refused_total{reason}`: requests refused before anything they claim
  was trusted (bad signature, replay, bad stream token: `Runtime.refused`).
- `hookline_voice_to_voice_seconds`: from the caller's last word to the agent's first
  audio, per turn; `hookline_stage_latency_seconds{stage}`: each stage of a turn
  (stt_final, end_of_turn_delay, llm_first_token, tts_first_byte, tool,
  runtime_overhead, loop_lag), from the `TurnMetrics` events; the loop lag inside a
  provider's share is counted in runtime_overhead, not in that share (engine/metrics.py).
- `hookline_provider_errors_total{provider,kind}`: `ProviderFailed` events; kind is
  "fatal" (the call ended with an apology) or "recovered" (the turn went on).
- `hookline_event_loop_lag_seconds`: how late a timer fires on the trio thread (a probe
  task sleeps `[metrics] lag_probe_interval_s` and measures the overshoot). Lag here
  delays every call's audio.
- `hookline_notifications_pending` / `hookline_notifications_failed`: the notification
  outbox's counts as of its sender's last look (`Outbox.counts`, refreshed at each of its
  passes: at least every `[outbox] poll_s`); absent without `[notifications]`.

Provider reconnects are not counted: no event reports them yet.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from .events import CallEvent, CallRecord, ProviderFailed, TurnMetrics
from .hookspecs import hookimpl
from .providers import ASGIApp, Route

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["RuntimeMetrics", "metrics_for", "serve_metrics", "watch_notifications"]

log = logging.getLogger("hookline.metrics")

METRICS_PATH = "/metrics"

# Seconds. Voice-to-voice of a good phone agent is 0.5-1.5 s; past 3 s callers talk over.
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

_metrics: weakref.WeakKeyDictionary[Runtime, RuntimeMetrics] = weakref.WeakKeyDictionary()


class _RefusedRequests(Collector):
    """`Runtime.refused` (a Counter the runtime owns) read at scrape time."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = weakref.ref(runtime)

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "hookline_requests_refused",
            "Requests refused before anything they claim was trusted, by reason",
            labels=["reason"],
        )
        runtime = self._runtime()
        for reason, count in sorted((runtime.refused if runtime else {}).items()):
            family.add_metric([reason], count)
        yield family


class RuntimeMetrics:
    """One runtime's registry and the instruments the hooks below feed."""

    def __init__(self, runtime: Runtime) -> None:
        self.registry = registry = CollectorRegistry()
        ref = weakref.ref(runtime)
        self.active_calls = Gauge("hookline_active_calls", "Calls in progress", registry=registry)
        self.active_calls.set_function(lambda: ((r := ref()) and r.active_calls) or 0)
        self.calls = Counter(
            "hookline_calls", "Calls ended, by end reason", ["reason"], registry=registry
        )
        self.admissions_refused = Counter(
            "hookline_admissions_refused",
            "Callers turned away (busy: all lines taken; draining: stopping)",
            ["reason"],
            registry=registry,
        )
        registry.register(_RefusedRequests(runtime))
        self.voice_to_voice = Histogram(
            "hookline_voice_to_voice_seconds",
            "From the caller's last word to the agent's first audio, per turn",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.stage_latency = Histogram(
            "hookline_stage_latency_seconds",
            "Latency of each stage of a turn",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.provider_errors = Counter(
            "hookline_provider_errors",
            "Provider failures during calls (fatal: the call ended; recovered: it went on)",
            ["provider", "kind"],
            registry=registry,
        )
        self.loop_lag = Histogram(
            "hookline_event_loop_lag_seconds",
            "How late a timer fires on the trio thread",
            buckets=LAG_BUCKETS,
            registry=registry,
        )

    def call_ended(self, record: CallRecord) -> None:
        reason = record.end_reason
        if reason.startswith("error:"):
            reason = "error"  # the rest is free text: not a label
        self.calls.labels(reason).inc()
        if reason.startswith("rejected:"):
            self.admissions_refused.labels(reason.partition(":")[2]).inc()

    def event(self, event: CallEvent) -> None:
        if isinstance(event, TurnMetrics):
            for stage, ms in event.metrics.items():
                if stage == "voice_to_voice":
                    self.voice_to_voice.observe(ms / 1000)
                else:
                    self.stage_latency.labels(stage).observe(ms / 1000)
        elif isinstance(event, ProviderFailed):
            kind = "fatal" if event.fatal else "recovered"
            self.provider_errors.labels(event.provider, kind).inc()

    def watch_notifications(
        self, pending: Callable[[], float], failed: Callable[[], float]
    ) -> None:
        pending_gauge = Gauge(
            "hookline_notifications_pending",
            "Notifications waiting to be delivered",
            registry=self.registry,
        )
        failed_gauge = Gauge(
            "hookline_notifications_failed",
            "Notifications that could not be delivered",
            registry=self.registry,
        )
        pending_gauge.set_function(pending)
        failed_gauge.set_function(failed)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def metrics_for(runtime: Runtime) -> RuntimeMetrics:
    """The runtime's metrics (created on first use)."""
    metrics = _metrics.get(runtime)
    if metrics is None:
        metrics = _metrics[runtime] = RuntimeMetrics(runtime)
    return metrics


def watch_notifications(
    runtime: Runtime, *, pending: Callable[[], float], failed: Callable[[], float]
) -> None:
    """THE HOOK POINT FOR THE NOTIFICATION OUTBOX (core/hookline/outbox/): call once per
    runtime with two cheap callbacks (state already held: they run at every scrape) and
    `hookline_notifications_pending` / `_failed` report them."""
    metrics_for(runtime).watch_notifications(pending, failed)


# ----------------------------------------------------------------- observer hooks


@hookimpl
def hookline_runtime_started(runtime: Runtime) -> None:
    metrics_for(runtime)
    outbox = runtime.outbox
    if outbox.store is not None:  # notification channels are configured
        watch_notifications(
            runtime,
            pending=lambda: outbox.counts.get("pending", 0),
            failed=lambda: outbox.counts.get("failed", 0),
        )


@hookimpl
def hookline_call_event(runtime: Runtime, event: CallEvent) -> None:
    if metrics := _metrics.get(runtime):
        metrics.event(event)


@hookimpl
def hookline_call_ended(runtime: Runtime, record: CallRecord) -> None:
    if metrics := _metrics.get(runtime):
        metrics.call_ended(record)


# ----------------------------------------------------------------- the metrics port


async def probe_loop_lag(metrics: RuntimeMetrics, interval_s: float) -> None:
    """Sleep `interval_s` again and again; how much later than asked we wake is lag."""
    while True:
        asked = trio.current_time() + interval_s
        await trio.sleep_until(asked)
        metrics.loop_lag.observe(max(0.0, trio.current_time() - asked))


def metrics_app(metrics: RuntimeMetrics) -> ASGIApp:
    """GET /metrics in the Prometheus text format (and the server's /healthz); 404 else."""
    from .server import asgi_app

    async def endpoint(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await receive()
            await send({"type": "websocket.close", "code": 1008})
            return
        body = metrics.exposition()
        headers = [
            (b"content-type", CONTENT_TYPE_LATEST.encode()),
            (b"content-length", b"%d" % len(body)),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return asgi_app([Route(METRICS_PATH, endpoint)])


async def serve_metrics(
    runtime: Runtime,
    *,
    shutdown: trio.Event,
    host: str | None = None,
    port: int | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve /metrics on `[metrics] host:port` (or the given ones) and run the lag probe,
    until `shutdown` is set; reports the bound port."""
    from .server import serve_asgi

    cfg = runtime.config.metrics
    metrics = metrics_for(runtime)
    host = host or cfg.host
    port = cfg.port if port is None else port
    async with trio.open_nursery() as nursery:
        probe = trio.CancelScope()
        nursery.start_soon(
            _in_scope, probe, partial(probe_loop_lag, metrics, cfg.lag_probe_interval_s)
        )
        app = metrics_app(metrics)
        bound = await nursery.start(partial(serve_asgi, app, host, port, shutdown=shutdown))
        log.info("metrics on http://%s:%d%s", host, bound, METRICS_PATH)
        task_status.started(bound)
        await shutdown.wait()
        probe.cancel()


async def _in_scope(scope: trio.CancelScope, run: Callable[[], Awaitable[None]]) -> None:
    with scope:
        await run()

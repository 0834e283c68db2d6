"""`hookline serve`: one ASGI app on one port, served on trio.

WebSocket upgrades (the media streams) are served in the app's own task by
hookline/wsserver.py; every other connection by anycorn (hookline/frontdoor.py).

anycorn is the AnyIO fork of Hypercorn. Hypercorn 0.18's trio worker closes a
connection (`send_eof`, which yields inside trio's send-conflict detector) without its
send lock, so a caller's close frame answered at the moment the app closes the socket
raised `trio.BusyResourceError` out of the whole server and dropped every live call
(issue 10; reproduced by tests/server/test_hangup_stress.py). In anycorn every write is
under the connection's send lock and AnyIO's `send_eof` does not yield, so a close
cannot meet a send half-way.

The app mounts the telephony provider's routes (exact paths), `GET /healthz` (liveness:
the process answers) and `GET /readyz` (readiness: 200 only once the fixed phrases are
cached, while no plugin reports a health problem and the server is not draining; 503
otherwise). `hookline serve` listens before the runtime starts, so liveness answers
during the boot (phrases being synthesized, an unreachable provider being retried);
until the runtime is ready the telephony routes answer 503 and refuse WebSockets
(1013, try again later). Prometheus metrics are served on their own port when
`[metrics] enabled` (hookline/metrics.py), never on this one.

Start-up failures are one line and an exit status each (hookline/startup.py).
SIGTERM (or SIGINT) drains: the runtime stops admitting calls (new callers hear the
busy message), active calls get `[server] drain_timeout_s` to finish and are then
ended with a goodbye; only then does the HTTP server stop and the runtime flush.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import secrets
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import ExitStack
from functools import partial

import anycorn.config
import msgspec
import trio

from .config import Config
from .errors import ConfigError, HooklineError
from .frontdoor import serve as serve_connections
from .providers import ASGIApp, Route
from .runtime import Runtime
from .workers import (
    DEFAULT_WORKERS,
    WorkerOptions,
    analytics_path_for,
    cores,
    parse_worker_option,
    report_failure,
    report_ready,
    run_workers,
    watch_lifeline,
)

__all__ = [
    "add_commands",
    "asgi_app",
    "build_app",
    "run_server",
    "serve_app",
    "serve_asgi",
    "serve_runtime",
]

log = logging.getLogger("hookline.server")

HEALTHZ = "/healthz"
READYZ = "/readyz"

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
_encode = msgspec.json.Encoder().encode


class _Health(msgspec.Struct):
    status: str
    active_calls: int
    draining: bool
    problems: list[str]  # from the plugins' hookline_health: not ready while any


class _Readiness(msgspec.Struct):
    status: str  # "ready" | "starting" | "draining" | "unhealthy"
    phrases_cached: bool
    draining: bool
    problems: list[str]


class Probes:
    """What /healthz and /readyz answer for one runtime; `ready` is set once the runtime
    has started (phrases cached, providers reached) and never cleared (draining and
    health problems are read live)."""

    def __init__(self, runtime: Runtime, *, ready: bool = True) -> None:
        self.runtime = runtime
        self.ready = ready

    def health(self) -> tuple[int, bytes]:
        runtime = self.runtime
        problems = runtime.health_problems()
        state = _Health(
            status="draining" if runtime.draining else "unhealthy" if problems else "ok",
            active_calls=runtime.active_calls,
            draining=runtime.draining,
            problems=problems,
        )
        return (503 if runtime.draining or problems else 200), _encode(state)

    def readiness(self) -> tuple[int, bytes]:
        runtime = self.runtime
        problems = runtime.health_problems() if self.ready else []
        status = (
            "starting" if not self.ready
            else "draining" if runtime.draining
            else "unhealthy" if problems
            else "ready"
        )  # fmt: skip
        state = _Readiness(
            status=status, phrases_cached=self.ready, draining=runtime.draining, problems=problems
        )
        return (200 if status == "ready" else 503), _encode(state)


def build_app(runtime: Runtime, probes: Probes | None = None) -> ASGIApp:
    """The server's ASGI app for a runtime: its telephony routes, /healthz and /readyz.

    Without `probes` the runtime is taken as started (ready)."""
    from .dashboard import mount_for  # /admin (its own module: starlette loads on demand)

    probes = probes or Probes(runtime)
    return asgi_app(
        runtime.telephony.routes(runtime),
        probes.health,
        readiness=probes.readiness,
        accepting=lambda: probes.ready,
        mounts=mount_for(runtime),
    )


def asgi_app(
    routes: Sequence[Route],
    health: Callable[[], tuple[int, bytes]] | None = None,
    *,
    readiness: Callable[[], tuple[int, bytes]] | None = None,
    accepting: Callable[[], bool] | None = None,
    mounts: Sequence[tuple[str, ASGIApp]] = (),
) -> ASGIApp:
    """One ASGI app over `routes` (exact paths), GET /healthz and /readyz, lifespan, 404
    for the rest. While `accepting()` is false the routes answer 503 (WebSocket: 1013).

    `mounts` are (prefix, app) pairs: a path equal to the prefix or under it goes to the
    app with the prefix added to `root_path` (the dashboard under /admin)."""
    table: dict[str, ASGIApp] = {}
    for route in routes:
        if route.path in table or route.path in (HEALTHZ, READYZ):
            raise ConfigError(f"telephony route {route.path} is mounted twice")
        table[route.path] = route.app
    probes = {
        HEALTHZ: health or (lambda: (200, b'{"status":"ok"}')),
        READYZ: readiness or health or (lambda: (200, b'{"status":"ready"}')),
    }

    async def app(scope: dict, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
            return
        target = table.get(scope["path"])
        if target is not None and accepting is not None and not accepting():
            await _not_yet(kind, receive, send)
        elif target is not None:
            await target(scope, receive, send)
        elif mounted := _mounted(mounts, scope):
            await mounted[1]({**scope, "root_path": scope.get("root_path", "") + mounted[0]},
                             receive, send)  # fmt: skip
        elif kind == "http" and scope["path"] in probes:
            status, body = probes[scope["path"]]()
            await _respond(send, status, body, b"application/json")
        elif kind == "http":
            await _respond(send, 404, b"not found\n", b"text/plain")
        elif kind == "websocket":
            await receive()
            await send({"type": "websocket.close", "code": 1008})

    return app


async def _not_yet(kind: str, receive: Receive, send: Send) -> None:
    """A request that arrived before the runtime is ready: refused, try again later."""
    if kind == "http":
        await _respond(send, 503, b"starting\n", b"text/plain")
    elif kind == "websocket":
        await receive()
        await send({"type": "websocket.close", "code": 1013})


def _mounted(mounts: Sequence[tuple[str, ASGIApp]], scope: dict) -> tuple[str, ASGIApp] | None:
    path = scope["path"]
    for prefix, app in mounts:
        if path == prefix or path.startswith(prefix + "/"):
            return prefix, app
    return None


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _respond(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _server_config(host: str, port: int) -> anycorn.config.Config:
    config = anycorn.config.Config()
    if host.startswith("fd://"):  # a socket the `--workers` supervisor bound for us
        config.bind = [host]
    else:
        config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hookline.server.http")
    # Calls are drained before the server stops; whatever is left is cut after this.
    config.graceful_timeout = 2.0
    return config


async def serve_app(
    runtime: Runtime,
    host: str,
    port: int,
    *,
    shutdown: trio.Event | None = None,
    probes: Probes | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the runtime's app until `shutdown` is set; reports the bound port.

    `port = await nursery.start(serve_app, runtime, "127.0.0.1", 0)` binds an ephemeral
    port. Setting `shutdown` closes the listeners and gives open requests
    `graceful_timeout` seconds (drain the runtime first: see `serve_runtime`).
    """
    app = build_app(runtime, probes)
    await serve_asgi(app, host, port, shutdown=shutdown, task_status=task_status)


async def serve_asgi(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve any ASGI app (on trio); reports the bound port.

    WebSocket upgrades are served in the app's task (hookline/wsserver.py), everything
    else by anycorn (hookline/frontdoor.py)."""
    stop = shutdown if shutdown is not None else trio.Event()
    config = _server_config(host, port)
    serve = partial(serve_connections, app, config, shutdown_trigger=stop.wait)
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(serve)
        log.info("listening on %s", ", ".join(binds))
        task_status.started(int(binds[0].rsplit(":", 1)[1]))


async def serve_runtime(
    runtime: Runtime,
    host: str,
    port: int,
    *,
    terminate: trio.Event | None = None,
    start: bool = False,
    freeze_heap: bool = False,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until SIGTERM/SIGINT (or until `terminate` is set), then drain and stop.

    With `start`, the server listens first (liveness answers, /readyz says "starting")
    and then starts the runtime (hookline/startup.py: retried, one-line failures);
    otherwise the runtime must be started already. The bound port is reported as soon
    as the server listens. Returns once every call has ended, the HTTP server is
    closed and `runtime.stop()` has flushed the observers. The signal handlers stay ours
    until then: a second signal during the drain ends the calls now (each still gets
    its goodbye, its hang-up and its record); later ones are logged and change nothing.
    With `freeze_heap` (the serving process of `hookline serve`), once the runtime is
    started and before calls are let in, its heap is frozen and collections are rarer
    (`tune_gc_for_serving`).
    """
    with ExitStack() as handlers:
        signals = None
        if terminate is None:
            signals = handlers.enter_context(
                trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT)
            )
        try:
            async with trio.open_nursery() as watchers:
                stop = trio.Event()
                if signals is not None:
                    watchers.start_soon(_watch_signals, signals, runtime, stop)
                else:
                    watchers.start_soon(_wait_then_set, terminate, stop)
                await watchers.start(runtime.run_background)  # post-call summaries
                watchers.start_soon(runtime.loop_lag.run)  # loop lag, booked per turn
                # Delivers notifications while the server runs; stopped with the watchers.
                watchers.start_soon(runtime.outbox.run)
                await _serve_then_drain(runtime, host, port, stop, start, freeze_heap, task_status)
                await runtime.finish_background()
                watchers.cancel_scope.cancel()
        finally:
            # Even after a crash: observers flush what they hold (nothing is lost).
            await runtime.aclose()
            log.info("stopped")


async def _serve_then_drain(
    runtime: Runtime,
    host: str,
    port: int,
    stop: trio.Event,
    start: bool,
    freeze_heap: bool,
    task_status: trio.TaskStatus[int],
) -> None:
    shutdown = trio.Event()
    probes = Probes(runtime, ready=not start)
    if freeze_heap and not start:
        tune_gc_for_serving()  # started already: before the first connection is taken
    async with trio.open_nursery() as nursery:
        serve = partial(serve_app, runtime, host, port, shutdown=shutdown, probes=probes)
        bound = await nursery.start(serve)
        if runtime.config.metrics.enabled:
            from .metrics import serve_metrics

            await nursery.start(partial(serve_metrics, runtime, shutdown=shutdown))
        task_status.started(bound)
        if start:
            await _start_unless_stopped(runtime, probes, stop, freeze_heap=freeze_heap)
        await stop.wait()
        timeout = runtime.config.server.drain_timeout_s
        log.info("draining %d active call(s), up to %.0f s", runtime.active_calls, timeout)
        await runtime.drain(timeout)
        shutdown.set()


# Collection thresholds while serving (CPython's defaults: 700, 10, 10). A full
# collection is a stop-the-world walk of every tracked object: at 100 calls one came
# every ~20 s and took 130-210 ms with the start-up heap in it (hence the freeze below)
# and 30-40 ms without. A middle collection walks what the young ones promoted since the
# last: its pause grows with threshold0 x threshold1. Measured at 100 calls over ~60 s
# (bench_server --turns 8 --think-s 3, a gc.callbacks hook), after the freeze:
#   700/10/100:  185 young (max 8.8 ms), 16 middle (max 16.5 ms), 0 full; 581 ms in all
#   2000/10/100:  55 young (max 12.9 ms), 4 middle (max 13.6 ms), 0 full; 195 ms in all
#   5000/20/20:   20 young (max 12.6 ms), 0 middle, 0 full; but a middle one of 81 ms in
#                 a 110 s run (20 x 5000 promoted objects at once)
# So: young ones as CPython 3.13 has them, middle ones bounded, and a full one only after
# 100 middle ones (tens of minutes at this load; a cycle among old objects waits as long).
SERVING_GC_THRESHOLDS = (2000, 10, 100)


def tune_gc_for_serving() -> None:
    """Move everything start-up built (modules, SDK clients, config: ~160k objects) out
    of the collector's reach, and collect less often (SERVING_GC_THRESHOLDS).

    A full collection walks every tracked object while holding the GIL; with the
    start-up heap in it, one took 130-210 ms in the middle of 100 calls, a stall every
    call in flight heard (loop lag p99 ~170-220 ms). Frozen objects are never scanned
    again, so a full collection walks only what the calls made. Collect first, so
    start-up garbage is freed rather than frozen."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVING_GC_THRESHOLDS)
    log.info(
        "start-up heap frozen: %d objects out of the collector's reach; thresholds %s",
        gc.get_freeze_count(),
        "/".join(map(str, SERVING_GC_THRESHOLDS)),
    )


async def _start_unless_stopped(
    runtime: Runtime, probes: Probes, stop: trio.Event, *, freeze_heap: bool
) -> None:
    """Start the runtime (a signal meanwhile abandons the start and goes on to stop)."""
    from .startup import start_runtime

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_set_then_cancel_scope, stop, nursery.cancel_scope)
        await start_runtime(runtime)
        if freeze_heap:
            tune_gc_for_serving()  # before /readyz lets the first call in
        probes.ready = True
        log.info("ready: %d phrases cached", len(runtime.phrases))
        nursery.cancel_scope.cancel()


async def _set_then_cancel_scope(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _watch_signals(signals: AsyncIterator[int], runtime: Runtime, stop: trio.Event) -> None:
    """The first signal drains; the second ends the calls now; none stops the drain."""
    async for signum in signals:
        name = signal.Signals(signum).name
        if not stop.is_set():
            log.info("received %s: draining", name)
            stop.set()
        elif not runtime.drain_cut_short:
            log.warning(
                "received %s again: ending %d active call(s) now, each with a goodbye",
                name,
                runtime.active_calls,
            )
            runtime.end_calls_now()
        else:
            log.warning(
                "received %s again: still ending %d call(s), stopping when they have ended",
                name,
                runtime.active_calls,
            )


async def _wait_then_set(terminate: trio.Event, stop: trio.Event) -> None:
    await terminate.wait()
    log.info("terminate requested: draining")
    stop.set()


async def run_server(
    config_path: str,
    host: str | None = None,
    port: int | None = None,
    *,
    workers: int = 1,
    worker: WorkerOptions | None = None,
    log_args: Sequence[str] = (),
) -> int:
    """`hookline serve`: load, discover, build, listen, start, serve, drain, stop.

    With `workers` > 1 this process supervises that many worker processes on one
    socket (core/hookline/workers.py), passing them `log_args` (the logging options of
    the command line); `worker` is set in each of them.
    """
    from .config import load_config
    from .logs import configure_from_config
    from .plugins import discover
    from .startup import check_bind, check_plugins, start_runtime

    config = load_config(config_path)
    configure_from_config(config.logging)
    host = host or config.server.host
    port = port if port is not None else config.server.port
    if worker is None:  # the supervisor or the only process: the address is ours to use
        check_bind(host, port, what=config.path, fix="use --host/--port or [server] port")
    if workers > 1:
        return await run_workers(
            config_path,
            host,
            port,
            workers,
            file=config.path,
            log_args=log_args,
            env=workers_environment(config),
        )
    if worker is not None:
        host, port = f"fd://{worker.listen_fd}", 0
        # One DuckDB file takes one process: each worker writes its own.
        config.analytics.database = analytics_path_for(config.analytics.database, worker.index)
    if worker is None:
        _check_metrics_port(config)
        plugins = discover()
        check_plugins(config, plugins)
        await serve_runtime(Runtime(config, plugins), host, port, start=True, freeze_heap=True)
        return 0
    try:
        if config.metrics.port:
            config.metrics.port += worker.index  # one metrics endpoint per worker
        _check_metrics_port(config)
        plugins = discover()
        check_plugins(config, plugins)
        runtime = Runtime(config, plugins)
        runtime.worker_index = worker.index
        await start_runtime(runtime)
    except HooklineError as e:
        # The supervisor says it, once for all workers, and exits with this status.
        report_failure(worker, str(e), getattr(e, "exit_code", 1))
        return 1
    async with trio.open_nursery() as nursery:

        async def serve(task_status: trio.TaskStatus[int]) -> None:
            await serve_runtime(runtime, host, port, freeze_heap=True, task_status=task_status)
            nursery.cancel_scope.cancel()  # drained and stopped: stop watching the lifeline

        # serve_runtime's signal receiver restores these when it returns: a signal the
        # supervisor forwards after this worker drained must not kill it mid-exit.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        await nursery.start(serve)
        log.info("worker %d (pid %d) serving", worker.index, os.getpid())
        report_ready(worker)
        nursery.start_soon(watch_lifeline, worker)
    return 0


def workers_environment(config: Config) -> dict[str, str]:
    """The environment of `--workers` processes: this one's, and one dashboard session
    key for all of them when none is configured. Each process would make its own, and a
    sign-in on one worker would be refused by the next page another worker answers."""
    env = dict(os.environ)
    name = config.dashboard.session_secret_env
    if config.dashboard.enabled and not env.get(name):
        env[name] = secrets.token_urlsafe(32)
    return env


def _check_metrics_port(config: Config) -> None:
    from .startup import check_bind

    if config.metrics.enabled:
        metrics, fix = config.metrics, "set [metrics] port to a free port"
        check_bind(metrics.host, metrics.port, what=f"{config.path}: metrics", fix=fix)


def _serve_command(args: argparse.Namespace) -> int:
    # One process unless asked (DEFAULT_WORKERS says why); `--workers auto`: one per core.
    workers = args.workers if args.workers is not None else DEFAULT_WORKERS
    log_args = [
        *(["-v"] if args.verbose else []),
        *(["--log-level", args.log_level] if args.log_level else []),
        *(["--log-format", args.log_format] if args.log_format else []),
    ]
    serve = partial(
        run_server,
        args.config,
        args.host,
        args.port,
        workers=1 if args.worker else workers,
        worker=args.worker,
        log_args=log_args,
    )
    return trio.run(serve)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, not {value}")
    return value


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="run the phone agent server")
    p.add_argument("config", metavar="CONFIG", help="the TOML config file")
    p.add_argument("--host", help="interface to listen on (overrides [server] host)")
    p.add_argument("--port", type=_port, help="port to listen on (overrides [server] port)")
    p.add_argument(
        "--workers",
        type=_workers,
        help="server processes sharing the port, each with its own runtime: a number, "
        "or auto for one per core (default 1, this process alone: see docs/capacity.md)",
    )
    # Set by the --workers supervisor in each worker: index and inherited descriptors.
    p.add_argument("--worker", type=parse_worker_option, help=argparse.SUPPRESS)
    p.set_defaults(func=_serve_command)


def _workers(text: str) -> int:
    if text == "auto":
        return min(cores(), 256)
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a number of workers: {text!r} (a number, or auto: one per core)"
        ) from None
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError(f"workers must be 1-256, not {value}")
    return value

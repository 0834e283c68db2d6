"""`hookline serve`: one ASGI app on one port, served by anycorn on trio.

anycorn is the AnyIO fork of Hypercorn. Hypercorn 0.18's trio worker closes a
connection (`send_eof`, which yields inside trio's send-conflict detector) without its
send lock, so a caller's close frame answered at the moment the app closes the socket
raised `trio.BusyResourceError` out of the whole server and dropped every live call
(issue 10; reproduced by tests/server/test_hangup_stress.py). In anycorn every write is
under the connection's send lock and AnyIO's `send_eof` does not yield, so a close
cannot meet a send half-way.

The app mounts the telephony provider's routes (exact paths) and `GET /healthz`.
SIGTERM (or SIGINT) drains: the runtime stops admitting calls (new callers hear the
busy message), active calls get `[server] drain_timeout_s` to finish and are then
ended with a goodbye; only then does the HTTP server stop and the runtime flush.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import ExitStack
from functools import partial

import anycorn
import anycorn.config
import msgspec
import trio

from .errors import ConfigError
from .providers import ASGIApp, Route
from .runtime import Runtime

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

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
_encode = msgspec.json.Encoder().encode


class _Health(msgspec.Struct):
    status: str
    active_calls: int
    draining: bool
    problems: list[str]  # from the plugins' hookline_health: not ready while any


def build_app(runtime: Runtime) -> ASGIApp:
    """The server's ASGI app for a runtime: its telephony routes and /healthz."""

    def health() -> tuple[int, bytes]:
        problems = runtime.health_problems()
        state = _Health(
            status="draining" if runtime.draining else "unhealthy" if problems else "ok",
            active_calls=runtime.active_calls,
            draining=runtime.draining,
            problems=problems,
        )
        return (503 if runtime.draining or problems else 200), _encode(state)

    from .dashboard import mount_for  # /admin (its own module: starlette loads on demand)

    return asgi_app(runtime.telephony.routes(runtime), health, mounts=mount_for(runtime))


def asgi_app(
    routes: Sequence[Route],
    health: Callable[[], tuple[int, bytes]] | None = None,
    *,
    mounts: Sequence[tuple[str, ASGIApp]] = (),
) -> ASGIApp:
    """One ASGI app over `routes` (exact paths), GET /healthz, lifespan, 404 for the rest.

    `mounts` are (prefix, app) pairs: a path equal to the prefix or under it goes to the
    app with the prefix added to `root_path` (the dashboard under /admin)."""
    table: dict[str, ASGIApp] = {}
    for route in routes:
        if route.path in table or route.path == HEALTHZ:
            raise ConfigError(f"telephony route {route.path} is mounted twice")
        table[route.path] = route.app

    async def app(scope: dict, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
            return
        target = table.get(scope["path"])
        if target is not None:
            await target(scope, receive, send)
        elif mounted := _mounted(mounts, scope):
            await mounted[1]({**scope, "root_path": scope.get("root_path", "") + mounted[0]},
                             receive, send)  # fmt: skip
        elif kind == "http" and scope["path"] == HEALTHZ:
            status, body = health() if health else (200, b'{"status":"ok"}')
            await _respond(send, status, body, b"application/json")
        elif kind == "http":
            await _respond(send, 404, b"not found\n", b"text/plain")
        elif kind == "websocket":
            await receive()
            await send({"type": "websocket.close", "code": 1008})

    return app


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
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the runtime's app until `shutdown` is set; reports the bound port.

    `port = await nursery.start(serve_app, runtime, "127.0.0.1", 0)` binds an ephemeral
    port. Setting `shutdown` closes the listeners and gives open requests
    `graceful_timeout` seconds (drain the runtime first: see `serve_runtime`).
    """
    await serve_asgi(build_app(runtime), host, port, shutdown=shutdown, task_status=task_status)


async def serve_asgi(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve any ASGI app with anycorn (on trio); reports the bound port."""
    stop = shutdown if shutdown is not None else trio.Event()
    serve = partial(anycorn.serve, app, _server_config(host, port), shutdown_trigger=stop.wait)
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
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until SIGTERM/SIGINT (or until `terminate` is set), then drain and stop.

    The runtime must be started. Returns once every call has ended, the HTTP server is
    closed and `runtime.stop()` has flushed the observers. The signal handlers stay ours
    until then: a second signal during the drain ends the calls now (each still gets
    its goodbye, its hang-up and its record); later ones are logged and change nothing.
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
                await _serve_then_drain(runtime, host, port, stop, task_status)
                watchers.cancel_scope.cancel()
        finally:
            # Even after a crash: observers flush what they hold (nothing is lost).
            await runtime.aclose()
            log.info("stopped")


async def _serve_then_drain(
    runtime: Runtime, host: str, port: int, stop: trio.Event, task_status: trio.TaskStatus[int]
) -> None:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(partial(serve_app, runtime, host, port, shutdown=shutdown))
        task_status.started(bound)
        await stop.wait()
        timeout = runtime.config.server.drain_timeout_s
        log.info("draining %d active call(s), up to %.0f s", runtime.active_calls, timeout)
        await runtime.drain(timeout)
        shutdown.set()


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


async def run_server(config_path: str, host: str | None = None, port: int | None = None) -> int:
    """`hookline serve`: load, discover, build, start, serve, drain, stop."""
    from .config import load_config
    from .plugins import discover

    config = load_config(config_path)
    host = host or config.server.host
    port = port if port is not None else config.server.port
    _check_bind(host, port, config.path)
    plugins = discover()
    for failure in plugins.failed:
        log.warning("plugin %s failed to load: %s", failure.name, failure.error)
    runtime = Runtime(config, plugins)
    await runtime.start()
    await serve_runtime(runtime, host, port)
    return 0


def _check_bind(host: str, port: int, file: str) -> None:
    """Fail early and in one line when the address is taken or not ours to use."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {e.strerror or e} (use --host/--port)",
                file=file or None,
                key="server",
            ) from None


def _serve_command(args: argparse.Namespace) -> int:
    _install_call_id_logging()
    return trio.run(run_server, args.config, args.host, args.port)


def _install_call_id_logging() -> None:
    """Every log line carries `call=<id>` (or `call=-` outside a call)."""

    class _CallId(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if not hasattr(record, "call_id"):
                record.call_id = "-"
            return True

    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s call=%(call_id)s %(message)s")
    for handler in logging.getLogger().handlers:
        # Only the console handler `hookline` set up, not one a host program installed.
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
            handler.addFilter(_CallId())
            handler.setFormatter(fmt)


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
    p.set_defaults(func=_serve_command)

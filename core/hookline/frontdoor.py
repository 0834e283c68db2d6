"""The server's accept loop: WebSocket upgrades on the lean path, the rest to anycorn.

Each connection's request head is read here. An HTTP/1.1 WebSocket upgrade (the Twilio
media stream) is served by hookline/wsserver.py in the app's own task; every other
connection is handed to anycorn's `TCPServer` exactly as anycorn's own accept loop
would, with the bytes already read replayed first (HTTP/1.1, h2c, keep-alive,
lifespan, graceful close of idle connections: all anycorn's).

This takes the place of `anycorn.serve` (anycorn/run.py `worker_serve`, whose accept
loop has no hook) and uses anycorn's `TCPServer`, `WorkerContext`, `Lifespan` and
`wrap_app` directly: core/pyproject.toml pins anycorn to its minor version for that.
On shutdown the listeners close, idle HTTP connections are told (`context.terminated`)
and every connection still open gets `graceful_timeout` seconds, as in anycorn.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import anyio
import anyio.abc
from anycorn.config import Config
from anycorn.lifespan import Lifespan
from anycorn.tcp_server import TCPServer
from anycorn.typing import AppWrapper, ConnectionState
from anycorn.utils import parse_socket_addr, repr_socket_addr, wrap_app
from anycorn.worker_context import WorkerContext

from .wsserver import ASGIApp, serve_websocket

__all__ = ["is_websocket_upgrade", "serve"]

log = logging.getLogger("hookline.server")

MAX_RECV = 2**16
_HEAD_END = b"\r\n\r\n"
_GONE = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


class _Replayed(anyio.abc.SocketStream):
    """A socket stream whose first reads return bytes already taken from it."""

    def __init__(self, stream: anyio.abc.SocketStream, replay: bytes) -> None:
        self._stream = stream
        self._replay = replay

    async def receive(self, max_bytes: int = MAX_RECV) -> bytes:
        if self._replay:
            data, self._replay = self._replay[:max_bytes], self._replay[max_bytes:]
            return data
        return await self._stream.receive(max_bytes)

    async def send(self, item: bytes) -> None:
        await self._stream.send(item)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self._stream.extra_attributes


def is_websocket_upgrade(head: bytes) -> bool:
    """Whether a complete HTTP/1.1 request head asks for a WebSocket upgrade."""
    request_line, _, rest = head.partition(b"\r\n")
    if not request_line.startswith(b"GET ") or not request_line.endswith(b" HTTP/1.1"):
        return False
    for line in rest.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"upgrade" and b"websocket" in value.lower():
            return True
    return False


class _Door:
    def __init__(self, app: ASGIApp, config: Config, state: dict) -> None:
        self.app = app
        self.wrapped: AppWrapper = wrap_app(app, config.wsgi_max_body_size, "asgi")
        self.config = config
        self.context = WorkerContext(None)
        self.state = state

    async def handle(self, stream: anyio.abc.SocketStream) -> None:
        """One connection; nothing it raises reaches the accept loop or another one."""
        try:
            head = await self._read_head(stream)
            if head is None:
                return
            if head.partition(_HEAD_END)[1] and is_websocket_upgrade(head):
                await self._websocket(stream, head)
            else:
                server = TCPServer(
                    self.wrapped, self.config, self.context, ConnectionState(self.state.copy()),
                    _Replayed(stream, head),
                )  # fmt: skip
                await server.run()
        except Exception:
            log.exception("connection failed")
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await stream.aclose()
                except _GONE:
                    pass

    async def _read_head(self, stream: anyio.abc.SocketStream) -> bytes | None:
        """The bytes up to the end of the request head (and whatever came with it);
        what does not look like a head within the limit goes to anycorn as it is."""
        buffer = b""
        limit = self.config.h11_max_incomplete_size
        # A connection that sends nothing is closed like anycorn's idle keep-alive one.
        with anyio.move_on_after(self.config.keep_alive_timeout):
            while _HEAD_END not in buffer and len(buffer) <= limit:
                try:
                    data = await stream.receive(MAX_RECV)
                except _GONE:
                    return None
                buffer += data
                if not buffer.startswith(b"GET "[: len(buffer)]):
                    break  # not a GET: anycorn's from the first byte
            return buffer
        return None

    async def _websocket(self, stream: anyio.abc.SocketStream, head: bytes) -> None:
        raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        await serve_websocket(
            self.app,
            stream,
            head,
            client=parse_socket_addr(raw.family, raw.getpeername()),
            server=parse_socket_addr(raw.family, raw.getsockname()),
            max_size=self.config.websocket_max_message_size,
            root_path=self.config.root_path,
        )


async def serve(
    app: ASGIApp,
    config: Config,
    *,
    shutdown_trigger: Callable[[], Awaitable[Any]],
    task_status: anyio.abc.TaskStatus[list[str]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` on `config.bind` until `shutdown_trigger()` returns; reports the binds."""
    state: dict = {}
    door = _Door(app, config, state)
    lifespan = Lifespan(door.wrapped, config, state)
    async with config.log, anyio.create_task_group() as lifespan_group:
        await lifespan_group.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with anyio.create_task_group() as connections, AsyncExitStack() as listeners:
            sockets = config.create_sockets()
            binds = []
            accept = []
            for sock in sockets.insecure_sockets:
                sock.listen(config.backlog)
                listener = await anyio.abc.SocketListener.from_socket(sock)
                accept.append(await listeners.enter_async_context(listener))
                binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
            task_status.started(binds)
            try:
                async with anyio.create_task_group() as accepting:
                    for listener in accept:
                        serve_one = partial(listener.serve, door.handle, task_group=connections)
                        accepting.start_soon(serve_one)
                    await shutdown_trigger()
                    accepting.cancel_scope.cancel()
            finally:
                await door.context.terminated.set()
                connections.cancel_scope.deadline = anyio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_group.cancel_scope.cancel()

"""A WebSocket connection served in the ASGI app's own task (the lean path).

anycorn serves a WebSocket with a reader task per connection that parses each read and
hands every message to the app through a memory stream, under a per-read deadline:
several task steps and a hop per 20 ms media frame. Here the app's `receive()` reads
the socket itself and parses with `websockets`' sans-I/O protocol (C-accelerated
unmasking), and `send()` writes directly under one lock shared by every writer (the
app's sends and the pongs / close replies `receive()` produces). No reader task and no
queue on the message path: WebSocket flow control is the back-pressure. One watcher
task per connection looks every WATCH_AFTER_S and reads on the app's behalf only while
the app has stopped reading (a peer's close is still answered, a ping still ponged);
the app's next `receive()` takes the socket back.

ASGI semantics as anycorn gave them: `websocket.connect` first; `websocket.close` before
accepting refuses the upgrade with HTTP 403; the peer's close code reaches the app in
`websocket.disconnect` (1006 when the TCP connection ended without one); a protocol
error, invalid UTF-8 or a message over `max_size` closes with 1002/1007/1009; an app
that raises or returns leaving the socket open gets it closed with 1011 (HTTP 500
before accepting; a raise is logged). Sends after the connection is gone are dropped,
as anycorn does.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import unquote_to_bytes

import anyio
import anyio.abc
import trio
from websockets.exceptions import InvalidMessage
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from .concurrency import held
from .sockio import SocketIO

__all__ = ["ASGIApp", "serve_websocket"]

log = logging.getLogger("hookline.server.ws")

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]],
                   Awaitable[None]]  # fmt: skip
MAX_RECV = 2**16
_DATA = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)
_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)
_ABNORMAL = 1006
# The app not reading for this long (between two receive() calls) wakes the watcher.
# Each look is a timer expiring in trio (a cancellation, ~33 µs of CPU): at 0.25 s that
# was 400 a second at 100 calls, for a safety net the media app (always reading) never
# needs; a peer's close to an app that stopped reading is answered within 1-2 s.
WATCH_AFTER_S = 1.0
WATCH_BACKLOG = 64  # messages the watcher reads ahead before it stops reading


class _Connection:
    """One upgraded connection: the protocol state, its reads and its writes."""

    def __init__(
        self,
        stream: anyio.abc.SocketStream,
        protocol: ServerProtocol,
        request: Request,
        early: Sequence[Frame],
    ) -> None:
        # Reads and writes go to the socket itself, syscall first (hookline/sockio.py);
        # the stream still owns it and closes it.
        self.io = SocketIO(stream.extra(anyio.abc.SocketAttribute.raw_socket))
        self.protocol = protocol
        self.request = request
        self._early = early  # frames that came with the head: the app hears them on accept
        self.write_lock = trio.Lock()
        self.connected = False  # the app has been told websocket.connect
        self.accepted = False
        self.closed = False  # a close was sent or received, or the socket is gone
        self.disconnect_code: int | None = None  # set once the app must hear disconnect
        self._pending: deque[dict] = deque()  # parsed messages not yet handed to the app
        self._takeover: trio.CancelScope | None = None  # set while the watcher reads
        self._app_reading = False  # the app is in receive(): the watcher must not read
        self._receives = 0  # receive() calls returned: the watcher sees the app is alive
        self._handed_back = trio.Event()
        self._fragments: list[bytes] = []
        self._fragment_text = False

    # ------------------------------------------------------------------ ASGI receive

    async def receive(self) -> dict:
        if not self.connected:
            self.connected = True
            return {"type": "websocket.connect"}
        self._app_reading = True
        if self._takeover is not None:  # the watcher is reading for us: take it back
            self._takeover.cancel()
            await self._handed_back.wait()
        try:
            while not self._pending:
                if self.disconnect_code is not None:
                    return {"type": "websocket.disconnect", "code": self.disconnect_code}
                if not self.accepted:
                    # Nothing to read before the handshake completes (the app decides first).
                    await trio.sleep_forever()
                await self._read()
            return self._pending.popleft()
        finally:
            self._app_reading = False
            self._receives += 1

    async def watch(self) -> None:
        """Read on the app's behalf while it does not: a peer's close is answered (and a
        ping ponged) even when the app has stopped reading, as anycorn's reader task did.

        It looks every WATCH_AFTER_S and takes over only when the app has neither been
        reading nor come back to read since the last look: a few task steps a second,
        nothing per message."""
        seen = -1
        while True:
            await trio.sleep(WATCH_AFTER_S)
            if self.disconnect_code is not None:
                return
            if not self.accepted or self._app_reading or self._receives != seen:
                seen = self._receives
                continue
            self._handed_back = trio.Event()
            with trio.CancelScope() as self._takeover:
                while self.disconnect_code is None and len(self._pending) < WATCH_BACKLOG:
                    await self._read()
                if self.disconnect_code is None:
                    await trio.sleep_forever()  # backlog full: flow control until the app reads
            self._takeover = None
            self._handed_back.set()
            if self.disconnect_code is not None:
                return

    async def _read(self) -> None:
        try:
            data = await self.io.receive(MAX_RECV)
        except _GONE:
            data = b""  # a reset is a drop, like an end of stream
        if not data:
            self.protocol.receive_eof()
            self._lost()
            return
        self.protocol.receive_data(data)
        await self._absorb()

    async def _absorb(self, early: Sequence[Frame] = ()) -> None:
        """Take the frames parsed so far; send what the protocol answered on its own."""
        protocol = self.protocol
        for frame in (*early, *protocol.events_received()) if early else protocol.events_received():
            opcode = frame.opcode
            if opcode in _DATA and self.disconnect_code is None:
                self._collect(opcode, frame.data, frame.fin)
        if protocol.close_rcvd is not None:
            self.closed = True
            self.disconnect_code = protocol.close_rcvd.code
        elif protocol.parser_exc is not None:
            self.closed = True
            sent = protocol.close_sent
            self.disconnect_code = sent.code if sent is not None else _ABNORMAL
        if protocol.writes:
            await self._flush()  # pongs, the close reply, a failure's close frame

    def _collect(self, opcode: Opcode, data: bytes, fin: bool) -> None:
        if opcode is not Opcode.CONT:
            self._fragment_text = opcode is Opcode.TEXT
        if not fin:
            self._fragments.append(data)
            return
        if self._fragments:
            self._fragments.append(data)
            data = b"".join(self._fragments)
            self._fragments.clear()
        if self._fragment_text:
            try:
                text = data.decode()
            except UnicodeDecodeError as e:
                self.protocol.fail(1007, f"invalid UTF-8 at position {e.start}")
                self.closed = True
                self.disconnect_code = 1007
                return
            self._pending.append({"type": "websocket.receive", "text": text})
        else:
            self._pending.append({"type": "websocket.receive", "bytes": data})

    def _lost(self) -> None:
        self.closed = True
        if self.disconnect_code is None:
            rcvd = self.protocol.close_rcvd
            self.disconnect_code = rcvd.code if rcvd is not None else _ABNORMAL

    # ------------------------------------------------------------------ ASGI send

    async def send(self, message: dict) -> None:
        kind = message["type"]
        protocol = self.protocol
        if kind == "websocket.accept" and not self.accepted and not self.closed:
            chosen = message.get("subprotocol")
            protocol.select_subprotocol = lambda _offered: chosen  # type: ignore[method-assign]
            response = protocol.accept(self.request)
            for name, value in message.get("headers", []):
                response.headers[name.decode("latin-1")] = value.decode("latin-1")
            protocol.send_response(response)
            self.accepted = response.status_code == 101
            if not self.accepted:
                self.closed = True
                self.disconnect_code = _ABNORMAL
            await self._flush()
            if self.accepted:
                await self._absorb(self._early)
            return
        elif kind == "websocket.send":
            if self.closed or protocol.state is not State.OPEN:
                return  # gone (or never accepted): dropped, as anycorn drops them
            data = message.get("bytes")
            if data is not None:
                protocol.send_binary(bytes(data))
            else:
                text = message["text"]
                if not isinstance(text, str):
                    raise TypeError(f"websocket.send text should be a str, not {text!r}")
                protocol.send_text(text.encode())
        elif kind == "websocket.close":
            if self.closed or (self.accepted and protocol.state is not State.OPEN):
                return
            self.closed = True
            if not self.accepted:
                protocol.send_response(protocol.reject(403, ""))
                self.disconnect_code = _ABNORMAL
            else:
                protocol.send_close(int(message.get("code", 1000)), message.get("reason") or "")
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} on a WebSocket")
        await self._flush()

    async def _flush(self) -> None:
        # Every outbound media message comes through here. Uncontended (nearly always),
        # it takes the lock without a trip through the scheduler and writes what the
        # socket takes at once without a cancel scope: those two were ~3/4 of this
        # method's CPU at 150 calls (py-spy), the write syscall the rest. Only a write
        # that must wait for room is shielded, as anycorn shields every write: a
        # cancelled write would leave half a frame.
        async with held(self.write_lock):
            for data in self.protocol.data_to_send():
                if not data:  # end of stream: the caller closes the socket
                    continue
                try:
                    written = self.io.write_nowait(data)
                    if written < len(data):
                        with trio.CancelScope(shield=True):
                            await self.io.send_all(memoryview(data)[written:])
                except _GONE:
                    self._lost()
                    return

    async def finish(self) -> None:
        """After the app returned (or raised) leaving the socket open, as anycorn does:
        1011 once accepted, HTTP 500 before."""
        if not self.closed:
            if self.accepted:
                await self.send({"type": "websocket.close", "code": 1011})
            else:
                self.closed = True
                self.protocol.send_response(self.protocol.reject(500, "Internal Server Error\n"))
                await self._flush()


async def serve_websocket(
    app: ASGIApp,
    stream: anyio.abc.SocketStream,
    head: bytes,
    *,
    client: tuple[str, int] | None,
    server: tuple[str, int] | None,
    max_size: int,
    root_path: str = "",
) -> None:
    """Serve one WebSocket upgrade whose request head (and anything after it) is `head`.

    Returns once the app has returned; the caller closes the stream. Never raises for
    the app's or the peer's failures (they are logged)."""
    protocol = ServerProtocol(max_size=max_size)
    protocol.receive_data(head)
    events = protocol.events_received()
    if not events or not isinstance(events[0], Request):
        exc = protocol.handshake_exc or InvalidMessage("incomplete request head")
        log.info("bad WebSocket upgrade request: %s", exc)
        protocol.send_response(protocol.reject(400, "Bad Request\n"))
        for data in protocol.data_to_send():
            if data:
                await stream.send(data)
        return
    request = events[0]
    target, _, query = request.path.partition("?")
    raw_path = target.encode("latin-1")
    try:
        path = unquote_to_bytes(raw_path).decode()
    except UnicodeDecodeError:
        protocol.send_response(protocol.reject(400, "Bad Request\n"))
        for data in protocol.data_to_send():
            if data:
                await stream.send(data)
        return
    headers = request.headers
    offered = [p.strip() for v in headers.get_all("Sec-WebSocket-Protocol") for p in v.split(",")]
    scope = {
        "type": "websocket",
        "asgi": {"spec_version": "2.3", "version": "3.0"},
        "scheme": "ws",
        "http_version": "1.1",
        "path": path,
        "raw_path": raw_path,
        "query_string": query.encode("latin-1"),
        "root_path": root_path,
        "headers": [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in headers.raw_items()
        ],
        "client": client,
        "server": server,
        "subprotocols": [p for p in offered if p],
        "extensions": {},
    }
    # Frames that came with the head (a client that did not wait for the 101) are
    # handed to the app once it accepts, as anycorn does.
    connection = _Connection(stream, protocol, request, events[1:])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection.watch)
        try:
            await app(scope, connection.receive, connection.send)
        except Exception:
            log.exception("WebSocket app failed on %s", path)
        await connection.finish()
        nursery.cancel_scope.cancel()

"""The WebSocket server transport of the loopback fakes (Deepgram STT and TTS).

The load generator of bench/bench_server.py runs the fakes on one core next to the
simulated callers, and every call streams 50 audio frames a second to the STT fake. On
trio-websocket that was most of the core: a reader task per connection parsing and
unmasking in pure Python (wsproto), every message hopping through a memory channel.
Here a connection is `websockets`' sans-I/O ServerProtocol (unmasking in C) on the
socket itself, read and written syscall first (`hookline.SocketIO`), the same pattern
as hookline's own lean server and client (core/hookline/wsserver.py, wsclient.py):

- `get_message()` parses what is already buffered and reads the socket only when
  nothing is; the pongs and the close reply the protocol produces while reading go out
  before it returns. No reader task, no channel: a connection whose handler does not
  read is not read (TCP flow control is the back-pressure).
- `send_message()` writes through SocketIO in the sending task. A task that finds a
  write in progress leaves its frame queued in the protocol; the writing task sends
  everything queued before it returns (as hookline.WebSocketClient does), so a reader's
  pong and a writer's message never interleave mid-frame.
- `aclose(code, reason)` sends the close frame and waits (at most CLOSE_TIMEOUT_S) for
  the peer's; `abort()` closes TCP without a close frame (what a network failure looks
  like). `ConnectionClosed.reason.code` is 1006 when TCP ended without a close frame.

The API is the small part of trio-websocket's server the fakes used: `serve(handler,
host, port)` started in a nursery gives an object with `.port`; the handler gets a
`WebSocketRequest` (`.path` with the query, `.headers` as (bytes, bytes) pairs,
`reject()`, `accept()`). One task per connection; a request head that does not arrive
within the handshake timeout closes the connection. A handler that returns with the
WebSocket still open has it closed with 1000, as trio-websocket did. For plain TCP on
loopback only: these are test fakes.
"""

from __future__ import annotations

import email.utils
import http
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial

import trio
from websockets.datastructures import Headers
from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from hookline import SocketIO

__all__ = [
    "CloseReason",
    "ConnectionClosed",
    "WebSocketConnection",
    "WebSocketRequest",
    "WebSocketServer",
    "serve",
]

log = logging.getLogger("hookline_testkit.wsfake")

HANDSHAKE_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 2.0  # our close frame out and the peer's back; the peer's TCP close
MAX_MESSAGE_BYTES = 1 << 20  # trio-websocket's default
_RECEIVE_BYTES = 65536
_ABNORMAL = 1006


@dataclass(frozen=True)
class CloseReason:
    """Why a connection ended: the close frame's code and reason (1006, "" without one)."""

    code: int
    reason: str = ""


class ConnectionClosed(Exception):
    """The WebSocket is closed (or closing): `reason` says how."""

    def __init__(self, reason: CloseReason) -> None:
        super().__init__(reason.code, reason.reason)
        self.reason = reason


class WebSocketConnection:
    """One TCP connection: the protocol state, its reads and its writes."""

    def __init__(self, stream: trio.SocketStream, *, max_message_bytes: int) -> None:
        self._stream = stream
        self._io = SocketIO(stream.socket)
        self._protocol = ServerProtocol(max_size=max_message_bytes)
        self._frames: deque[Frame] = deque()  # parsed, not yet taken by get_message()
        self._parts: list[bytes] = []  # fragments of the message being reassembled
        self._text = False
        self._reading = False  # a task is in get_message() (or aclose() reads)
        self._writing = False
        # Set by abort() and once the socket is closed: the file descriptor may be
        # reused, so SocketIO must not touch it again.
        self._tcp_closed = False
        self._eof_received = False
        self._ended = trio.Event()  # the peer's close frame came, or TCP is gone

    # ------------------------------------------------------------------ the API

    async def get_message(self) -> str | bytes:
        """The next whole message (text as str); ConnectionClosed once the connection
        has ended. Cancelling it loses nothing: a message is taken only when whole."""
        if self._reading:
            raise trio.BusyResourceError("another task is already reading this WebSocket")
        self._reading = True
        try:
            while True:
                message = self._take_message()
                if message is not None:
                    return message
                if self._protocol.writes:
                    await self._flush_replies()  # a failure's close frame (invalid UTF-8)
                closure = self._closure()
                if closure is not None:
                    raise ConnectionClosed(closure)
                await self._receive_some()
        finally:
            self._reading = False

    async def send_message(self, message: str | bytes) -> None:
        """Send one message (str as a text frame); ConnectionClosed when the connection
        is closing or gone."""
        # Checked before the frame is queued: once it is, a cancel can only come while
        # the socket is full mid-write, and then the connection is aborted (a partial
        # frame cannot be taken back).
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            if isinstance(message, str):
                self._protocol.send_text(message.encode())
            else:
                self._protocol.send_binary(message)
        except InvalidState:
            raise ConnectionClosed(self._closure_for_sender()) from None
        await self._flush()

    async def aclose(self, code: int = 1000, reason: str | None = "") -> None:
        """Send a close frame (if still open), wait at most CLOSE_TIMEOUT_S for the
        peer's, then close TCP. Never raises for a connection already gone."""
        try:
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                if self._protocol.state is State.OPEN:
                    self._protocol.send_close(code, reason or "")
                    await self._flush()
                if self._reading:
                    await self._ended.wait()  # the reading task sees the peer's close
                else:
                    self._reading = True
                    try:
                        while self._closure() is None:
                            await self._receive_some()
                    finally:
                        self._reading = False
        except ConnectionClosed:
            pass
        finally:
            self.abort()

    def abort(self) -> None:
        """End TCP now, without a close frame. A task waiting to read or write on this
        connection wakes up with ConnectionClosed (1006 unless a close frame came).

        The socket is shut down both ways (the peer sees the end of the stream; a
        waiting task wakes with it), and closed only once the connection's task ends:
        a task already woken to read or write must not find its file descriptor
        reused by another connection meanwhile."""
        if not self._tcp_closed:
            self._tcp_closed = True
            self._ended.set()
            try:
                self._stream.socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already reset by the peer

    @property
    def closed(self) -> CloseReason | None:
        """How the connection ended, or None while it is open."""
        return self._closure()

    # ------------------------------------------------------------------ reading

    def _take_message(self) -> str | bytes | None:
        frames = self._frames
        while frames:
            frame = frames.popleft()
            opcode = frame.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                self._text = opcode is Opcode.TEXT
                self._parts = [frame.data]
            elif opcode is Opcode.CONT:
                self._parts.append(frame.data)
            else:
                continue  # ping/pong (answered by the protocol), close (see _closure)
            if not frame.fin:
                continue
            parts, self._parts = self._parts, []
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            if not self._text:
                return bytes(data)
            try:
                return data.decode()
            except UnicodeDecodeError as exc:
                self._protocol.fail(1007, f"invalid UTF-8 at position {exc.start}")
                frames.clear()
                return None
        return None

    async def _receive_some(self) -> None:
        if self._tcp_closed:
            data = b""
        else:
            try:
                data = await self._io.receive(_RECEIVE_BYTES)
            except OSError:
                data = b""  # a reset is a drop, like an end of stream
        self._absorb(data)
        if self._closure() is not None:
            self._ended.set()
        await self._flush_replies()

    def _absorb(self, data: bytes) -> None:
        protocol = self._protocol
        if data:
            protocol.receive_data(data)
        else:
            self._eof_received = True
            protocol.receive_eof()
        for event in protocol.events_received():
            if isinstance(event, Frame):
                self._frames.append(event)

    def _closure(self) -> CloseReason | None:
        protocol = self._protocol
        if protocol.close_rcvd is not None:
            return CloseReason(protocol.close_rcvd.code, protocol.close_rcvd.reason)
        if protocol.parser_exc is not None:  # a protocol error (close sent) or an EOF
            sent = protocol.close_sent
            return CloseReason(sent.code, sent.reason) if sent else CloseReason(_ABNORMAL)
        if self._tcp_closed or self._eof_received:
            return CloseReason(_ABNORMAL)
        return None

    def _closure_for_sender(self) -> CloseReason:
        closure = self._closure()
        if closure is None:  # we are closing and the peer has not answered yet
            sent = self._protocol.close_sent
            closure = CloseReason(sent.code, sent.reason) if sent else CloseReason(_ABNORMAL)
        return closure

    # ------------------------------------------------------------------ writing

    async def _flush_replies(self) -> None:
        """What the protocol answered on its own while reading (pongs, the close reply,
        a failure's close frame): not lost to a cancelled read (an idle timeout around
        get_message()), nor waited for longer than CLOSE_TIMEOUT_S."""
        if not self._protocol.writes:
            return
        with trio.CancelScope(shield=True):
            with trio.move_on_after(CLOSE_TIMEOUT_S) as bounded:
                try:
                    await self._flush()
                except ConnectionClosed:
                    pass  # the reader finds out from the stream itself
            if bounded.cancelled_caught:
                self.abort()

    async def _flush(self) -> None:
        """Write everything the protocol has queued, unless another task is writing (it
        writes what was queued here too before it returns)."""
        if self._writing:
            return
        self._writing = True
        try:
            while writes := self._protocol.data_to_send():
                end = not writes[-1]  # b"": websockets' end of stream, after the rest
                data = writes[0] if len(writes) == 1 else b"".join(writes)
                if data:
                    await self._write(data)
                if end:
                    self._shutdown_write()
        finally:
            self._writing = False

    async def _write(self, data: bytes) -> None:
        if self._tcp_closed:
            raise ConnectionClosed(self._closure_for_sender())
        try:
            await self._io.send_all(data)
        except OSError:
            self.abort()
            raise ConnectionClosed(self._closure_for_sender()) from None
        except BaseException:
            self.abort()  # cancelled mid-frame: the stream cannot be trusted any more
            raise

    def _shutdown_write(self) -> None:
        """Half-close: the peer reads everything sent, then its end of stream."""
        if not self._tcp_closed:
            try:
                self._stream.socket.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    # ------------------------------------------------------------------ lifetime

    async def _handshake(self, timeout_s: float) -> tuple[Request, Response] | None:
        """The client's request and the 101 (or refusal) websockets would answer; None
        (after answering, if an answer is due) when no valid request came in time."""
        protocol = self._protocol
        events: list = []
        with trio.move_on_after(timeout_s) as timer:
            while not events and protocol.handshake_exc is None and not self._eof_received:
                try:
                    data = await self._io.receive(_RECEIVE_BYTES)
                except OSError:
                    data = b""
                if data:
                    protocol.receive_data(data)
                else:
                    self._eof_received = True
                    protocol.receive_eof()
                events = protocol.events_received()
        if timer.cancelled_caught:
            log.debug("no WebSocket request head within %g s: closing", timeout_s)
            return None
        if not events:
            if protocol.handshake_exc is not None:
                log.debug("bad WebSocket request: %s", protocol.handshake_exc)
            await self._flush_replies()  # 414/431 when websockets answered one
            return None
        request = events[0]
        self._frames.extend(e for e in events[1:] if isinstance(e, Frame))
        return request, protocol.accept(request)

    async def _finish(self) -> None:
        """After the handler: the peer's end of stream (briefly), then close TCP. Reading
        to the end before closing keeps unread input from turning the close into a reset
        that could discard what we sent last (a refusal's body, a close frame)."""
        if not self._tcp_closed and not self._reading:
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                while not self._eof_received:
                    try:
                        data = await self._io.receive(_RECEIVE_BYTES)
                    except OSError:
                        break
                    self._eof_received = not data
        self.abort()


class WebSocketRequest:
    """An upgrade request the handler answers with `accept()` or `reject()`."""

    def __init__(
        self, connection: WebSocketConnection, request: Request, response: Response
    ) -> None:
        self._connection = connection
        self._response = response  # websockets' 101 for this request
        self.path: str = request.path  # the target, query included
        self.headers: list[tuple[bytes, bytes]] = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in request.headers.raw_items()
        ]
        self.answered = False

    async def accept(self) -> WebSocketConnection:
        """Complete the upgrade; the open connection."""
        self._answer(self._response)
        await self._connection._flush()
        return self._connection

    async def reject(
        self,
        status: int,
        *,
        extra_headers: Sequence[tuple[bytes, bytes]] = (),
        body: bytes = b"",
    ) -> None:
        """Refuse the upgrade with an HTTP answer (these headers and body)."""
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        headers = Headers(
            [
                ("Date", email.utils.formatdate(usegmt=True)),
                ("Connection", "close"),
                ("Content-Length", str(len(body))),
            ]
        )
        for name, value in extra_headers:
            headers[name.decode("latin-1")] = value.decode("latin-1")
        self._answer(Response(status, phrase, headers, body))
        try:
            await self._connection._flush()
        except ConnectionClosed:
            pass  # the client is gone: nobody to tell

    def _answer(self, response: Response) -> None:
        if self.answered:
            raise RuntimeError("this WebSocket request was already answered")
        self.answered = True
        self._connection._protocol.send_response(response)


Handler = Callable[[WebSocketRequest], Awaitable[None]]


class WebSocketServer:
    """A running `serve()`: its port, and how many connections it is serving."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.open_connections = 0


async def serve(
    handler: Handler,
    host: str,
    port: int,
    *,
    handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve WebSocket upgrades on host:port (0: an ephemeral port) until cancelled,
    each connection in its own task; started with `nursery.start`, it gives the
    WebSocketServer. A handler's exception (other than ConnectionClosed) propagates:
    in a fake, a bug should fail the test."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    server = WebSocketServer(listeners[0].socket.getsockname()[1])
    one = partial(_serve_connection, handler, server, handshake_timeout_s, max_message_bytes)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, one, listeners)
        task_status.started(server)


async def _serve_connection(
    handler: Handler,
    server: WebSocketServer,
    handshake_timeout_s: float,
    max_message_bytes: int,
    stream: trio.SocketStream,
) -> None:
    server.open_connections += 1
    connection = WebSocketConnection(stream, max_message_bytes=max_message_bytes)
    try:
        handshake = await connection._handshake(handshake_timeout_s)
        if handshake is None:
            return
        request, response = handshake
        if response.status_code != 101:  # not a valid upgrade: websockets' answer
            log.debug("WebSocket upgrade refused: HTTP %d", response.status_code)
            await WebSocketRequest(connection, request, response).reject(
                response.status_code,
                extra_headers=[(b"content-type", b"text/plain; charset=utf-8")],
                body=bytes(response.body),
            )
        else:
            ws_request = WebSocketRequest(connection, request, response)
            try:
                await handler(ws_request)
            except ConnectionClosed:
                pass
            if not ws_request.answered:
                await ws_request.reject(500)
            elif connection.closed is None and connection._protocol.state is not State.CONNECTING:
                await connection.aclose(1000)  # the handler left it open
        await connection._finish()
    finally:
        connection.abort()
        stream.socket.close()  # the handler has returned: no task of it can use the fd
        server.open_connections -= 1

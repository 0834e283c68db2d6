"""A lean client WebSocket for a provider's stream (Deepgram's STT and TTS):
`websockets`' sans-I/O protocol on a trio stream, nothing else.

An STT stream sends a 20 ms frame of caller audio 50 times a second per call, so the
send path is kept short: the frame is built (masked in C by `websockets.speedups`) and
written by the task that sends it, with no lock and no extra task. Reading is done by
the one task that consumes the messages (no background reader, no channel).

Only one task writes at a time without a lock: a task that finds a write in progress
leaves its frame queued in the protocol, and the writing task sends everything queued
before it returns.

On a plain (ws://) connection the socket is read and written syscall first
(`hookline.SocketIO`), and `send_nowait()` lets the task that has a frame write it
without waiting and without a task hop: what the socket does not take at once stays
queued for `flush()`. A TLS connection goes through trio.SSLStream as it is.
"""

from __future__ import annotations

import ssl
from collections import deque
from collections.abc import Sequence

import trio
from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.exceptions import InvalidState, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from .sockio import SocketIO

__all__ = [
    "WebSocketClient",
    "WebSocketClosed",
    "WebSocketRejected",
    "WebSocketUnreachable",
]

_RECEIVE_BYTES = 65536
_CLOSE_TIMEOUT_S = 1.0  # for our close frame on the way out


class WebSocketUnreachable(Exception):
    """No WebSocket: the TCP/TLS connect or the HTTP upgrade failed (not a refusal)."""


class WebSocketRejected(Exception):
    """The server answered the upgrade with an HTTP error status."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.status_code: int = response.status_code
        self.headers: Headers = response.headers
        self.body: bytes = bytes(response.body or b"")  # websockets gives a bytearray


class WebSocketClosed(Exception):
    """The connection is closed: `code` 1006 when it dropped without a close frame."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class WebSocketClient:
    """One open connection. `connect()` it; `send()`, `receive()`, `aclose()`."""

    def __init__(self, stream: trio.abc.Stream, protocol: ClientProtocol) -> None:
        self._stream = stream
        # Plain TCP: syscall-first reads and writes; TLS: the SSLStream itself.
        self._io = SocketIO(stream.socket) if isinstance(stream, trio.SocketStream) else None
        self._protocol = protocol
        self._frames: deque[Frame] = deque()  # received, not yet returned by receive()
        self._writing = False
        self._unsent = b""  # taken from the protocol, not yet taken by the socket
        # Set by aclose(): the file descriptor may be reused by then, so SocketIO must not
        # touch it again (a reader woken just before another task closed the socket).
        self._closed = False

    @classmethod
    async def connect(
        cls,
        url: str,
        headers: Sequence[tuple[str, str]],
        *,
        tls: ssl.SSLContext | None,
        timeout_s: float,
        max_message_bytes: int = 1 << 20,
    ) -> WebSocketClient:
        """Connect and upgrade within `timeout_s`. Raises WebSocketRejected for an HTTP
        error answer, WebSocketUnreachable for everything else that kept the WebSocket
        from opening. A larger message from the server fails the connection (1009)."""
        uri = parse_uri(url)
        stream: trio.abc.Stream | None = None
        try:
            with trio.fail_after(timeout_s):
                stream = await trio.open_tcp_stream(uri.host, uri.port)
                if uri.secure:
                    if tls is None:
                        raise ValueError("a wss:// URL needs a TLS context")
                    secure = trio.SSLStream(
                        stream, tls, server_hostname=uri.host, https_compatible=True
                    )
                    stream = secure
                    await secure.do_handshake()  # so a certificate error says so
                protocol = ClientProtocol(uri, max_size=max_message_bytes)
                request = protocol.connect()
                for name, value in headers:
                    request.headers[name] = value
                protocol.send_request(request)
                ws = cls(stream, protocol)
                await ws._flush()
                while protocol.state is State.CONNECTING and not protocol.handshake_exc:
                    await ws._receive_some()
        except trio.TooSlowError:
            await _abort(stream)
            raise WebSocketUnreachable(f"no answer within {timeout_s:g} s") from None
        except (
            OSError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            WebSocketClosed,
        ) as exc:
            await _abort(stream)
            raise WebSocketUnreachable(repr(exc.__cause__ or exc)) from None
        except BaseException:
            await _abort(stream)
            raise
        exc = protocol.handshake_exc
        if exc is not None:
            await _abort(stream)
            if isinstance(exc, InvalidStatus):
                raise WebSocketRejected(exc.response) from None
            raise WebSocketUnreachable(f"the WebSocket upgrade failed ({exc})") from None
        return ws

    async def send(self, message: str | bytes) -> None:
        """Send one message (str as a text frame); WebSocketClosed if the connection is
        gone."""
        try:
            if isinstance(message, str):
                self._protocol.send_text(message.encode())
            else:
                self._protocol.send_binary(message)
        except InvalidState:
            raise WebSocketClosed(self._close_code(), self._close_reason()) from None
        await self._flush()

    def send_nowait(self, message: bytes) -> bool:
        """Queue one binary message and write what the socket takes now, without
        waiting. True: all of it went out. False: some is still queued (a write was
        already in progress, the socket was full, or the connection is TLS) and
        `flush()` sends it. WebSocketClosed if the connection is gone."""
        try:
            self._protocol.send_binary(message)
        except InvalidState:
            raise WebSocketClosed(self._close_code(), self._close_reason()) from None
        if self._writing or self._io is None or self._unsent or self._closed:
            return False
        data = b"".join(self._protocol.data_to_send())
        try:
            written = self._io.write_nowait(data)
        except OSError:
            raise WebSocketClosed(1006) from None
        if written < len(data):
            self._unsent = data[written:]
            return False
        return True

    @property
    def has_unsent(self) -> bool:
        """Bytes are queued that `flush()` must still send."""
        return bool(self._unsent) or bool(self._protocol.writes)

    async def flush(self) -> None:
        """Send everything queued (see `send_nowait`); WebSocketClosed if the connection
        is gone."""
        await self._flush()

    async def receive(self) -> str | bytes:
        """The next message; WebSocketClosed (with the server's code) once the
        connection ends."""
        parts: list[bytes] = []
        text = False
        while True:
            while self._frames:
                frame = self._frames.popleft()
                if frame.opcode is Opcode.TEXT or frame.opcode is Opcode.BINARY:
                    text, parts = frame.opcode is Opcode.TEXT, [frame.data]
                elif frame.opcode is Opcode.CONT:
                    parts.append(frame.data)
                else:
                    continue  # ping/pong (answered by the protocol), close (state below)
                if frame.fin:
                    data = b"".join(parts) if len(parts) > 1 else bytes(parts[0])
                    return data.decode() if text else data
            if self._protocol.state is not State.OPEN:
                # Closed, or closing: the server's close frame came, or the protocol
                # failed the connection on a bad frame (no close from the server: 1006).
                raise WebSocketClosed(self._close_code(), self._close_reason())
            await self._receive_some()

    async def aclose(self) -> None:
        """Send a close frame if the connection is still open (briefly), then hang up."""
        try:
            with trio.move_on_after(_CLOSE_TIMEOUT_S):
                if self._protocol.state is State.OPEN:
                    self._protocol.send_close(1000)
                    await self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self._closed = True
            await trio.aclose_forcefully(self._stream)

    # ------------------------------------------------------------------ internals

    async def _receive_some(self) -> None:
        try:
            if self._closed:
                data = b""
            elif self._io is not None:
                data = await self._io.receive(_RECEIVE_BYTES)
            else:
                data = await self._stream.receive_some(_RECEIVE_BYTES)
        except (trio.BrokenResourceError, OSError):
            data = b""  # a reset is a drop, like an EOF
        if data:
            self._protocol.receive_data(data)
        else:
            self._protocol.receive_eof()
        for event in self._protocol.events_received():
            if isinstance(event, Frame):
                self._frames.append(event)
        try:
            await self._flush()  # pongs, the reply to a close frame
        except WebSocketClosed:
            pass  # the reader finds out from the stream itself

    async def _flush(self) -> None:
        """Write everything the protocol has queued, unless another task is writing (it
        writes what was queued here too before it returns)."""
        if self._writing:
            return
        self._writing = True
        try:
            if self._unsent:
                data, self._unsent = self._unsent, b""
                await self._send_all(data)
            while writes := self._protocol.data_to_send():
                data = writes[0] if len(writes) == 1 else b"".join(writes)
                if data:  # b"" alone is websockets' "half-close": we close the stream
                    await self._send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            raise WebSocketClosed(1006) from None
        finally:
            self._writing = False

    async def _send_all(self, data: bytes) -> None:
        if self._closed:
            raise trio.ClosedResourceError
        if self._io is not None:
            await self._io.send_all(data)
        else:
            await self._stream.send_all(data)

    def _close_code(self) -> int:
        close = self._protocol.close_rcvd
        return 1006 if close is None else close.code

    def _close_reason(self) -> str:
        close = self._protocol.close_rcvd
        return "" if close is None else close.reason


async def _abort(stream: trio.abc.Stream | None) -> None:
    if stream is not None:
        await trio.aclose_forcefully(stream)

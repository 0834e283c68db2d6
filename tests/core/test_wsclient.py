"""The lean WebSocket client (hookline/wsclient.py) against a loopback server speaking the
protocol through websockets' own server side: what the Deepgram fake never does
(pings, fragmented messages, an HTTP refusal with Retry-After)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from hookline import WebSocketClient, WebSocketClosed, WebSocketRejected

Handler = Callable[["_Peer"], Awaitable[None]]


class _Peer:
    """The server end of one connection: websockets' ServerProtocol on a trio stream."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.protocol = ServerProtocol()
        self.received: list[Frame] = []

    async def flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                await self.stream.send_all(data)

    async def read_until(self, done: Callable[[], bool]) -> None:
        while not done():
            data = await self.stream.receive_some(65536)
            if not data:
                self.protocol.receive_eof()
                return
            self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                if isinstance(event, Request):
                    self.request = event
                else:
                    self.received.append(event)
            await self.flush()


async def _serve(handler: Handler, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    async def one(stream: trio.SocketStream) -> None:
        async with stream:
            await handler(_Peer(stream))

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(one, listeners)


async def _with_server(handler: Handler, client: Callable[[int], Awaitable[None]]) -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_serve, handler)
        with trio.fail_after(10):
            await client(port)
        nursery.cancel_scope.cancel()


async def test_pings_are_answered_and_fragments_come_back_whole() -> None:
    async def handler(peer: _Peer) -> None:
        await peer.read_until(lambda: hasattr(peer, "request"))
        assert peer.request.headers["Authorization"] == "Token k"
        peer.protocol.send_response(peer.protocol.accept(peer.request))
        peer.protocol.send_ping(b"are you there")
        peer.protocol.send_text(b'{"type":', fin=False)
        peer.protocol.send_continuation(b'"Results"}', fin=True)
        peer.protocol.send_binary(b"\x01\x02")
        await peer.flush()
        await peer.read_until(lambda: len(peer.received) >= 2)
        peer.protocol.send_close(1011, "bye")
        await peer.flush()
        await peer.read_until(lambda: False)  # until the client hangs up

    async def client(port: int) -> None:
        ws = await WebSocketClient.connect(
            f"ws://127.0.0.1:{port}/v1/listen", [("Authorization", "Token k")], tls=None,
            timeout_s=5,
        )  # fmt: skip
        try:
            assert await ws.receive() == '{"type":"Results"}'
            assert await ws.receive() == b"\x01\x02"
            await ws.send(b"audio")
            with pytest.raises(WebSocketClosed) as info:
                await ws.receive()
            assert (info.value.code, info.value.reason) == (1011, "bye")
            with pytest.raises(WebSocketClosed):
                await ws.send(b"more audio")  # after the close: an error, not a hang
        finally:
            await ws.aclose()

    received: list[Frame] = []

    async def recording(peer: _Peer) -> None:
        peer.received = received
        await handler(peer)

    await _with_server(recording, client)
    pong = [f for f in received if f.opcode is Opcode.PONG]
    assert [f.data for f in pong] == [b"are you there"]
    assert [f.data for f in received if f.opcode is Opcode.BINARY] == [b"audio"]


async def test_an_http_refusal_carries_status_headers_and_body() -> None:
    async def handler(peer: _Peer) -> None:
        await peer.read_until(lambda: hasattr(peer, "request"))
        response = peer.protocol.reject(429, '{"err_code":"TOO_MANY_REQUESTS"}')
        response.headers["Retry-After"] = "2"
        peer.protocol.send_response(response)
        await peer.flush()

    async def client(port: int) -> None:
        with pytest.raises(WebSocketRejected) as info:
            await WebSocketClient.connect(f"ws://127.0.0.1:{port}/", [], tls=None, timeout_s=5)
        assert info.value.status_code == 429
        assert info.value.headers["Retry-After"] == "2"
        assert b"TOO_MANY_REQUESTS" in info.value.body
        assert type(info.value.body) is bytes  # not websockets' bytearray: messages decode it

    await _with_server(handler, client)


async def test_send_nowait_keeps_what_a_full_socket_did_not_take_for_flush() -> None:
    """A server that stops reading: `send_nowait` never waits, says when a message went
    out only in part, and `flush()` sends the rest; every message arrives whole, in
    order."""
    go_on = trio.Event()
    all_read = trio.Event()
    count = 0

    async def handler(peer: _Peer) -> None:
        await peer.read_until(lambda: hasattr(peer, "request"))
        peer.protocol.send_response(peer.protocol.accept(peer.request))
        await peer.flush()
        await go_on.wait()  # not reading: the client's socket fills
        await peer.read_until(lambda: len(peer.received) >= count)
        all_read.set()

    received: list[Frame] = []

    async def recording(peer: _Peer) -> None:
        peer.received = received
        await handler(peer)

    async def client(port: int) -> None:
        nonlocal count
        ws = await WebSocketClient.connect(
            f"ws://127.0.0.1:{port}/v1/listen", [], tls=None, timeout_s=5
        )
        try:
            while True:  # 64 KB messages until the kernel buffers are full
                message = count.to_bytes(4, "big") * 16384
                count += 1
                if not ws.send_nowait(message):
                    break
                assert count < 10_000, "the socket never filled"
            assert ws.has_unsent
            more = count.to_bytes(4, "big") * 16384
            count += 1
            assert not ws.send_nowait(more)  # queued behind the unsent part, not written
            go_on.set()
            await ws.flush()
            assert not ws.has_unsent
            await all_read.wait()  # before our close ends the test's server
        finally:
            await ws.aclose()

    await _with_server(recording, client)
    binary = [f.data for f in received if f.opcode is Opcode.BINARY]
    assert [int.from_bytes(data[:4], "big") for data in binary] == list(range(count))
    assert all(len(data) == 65536 for data in binary)

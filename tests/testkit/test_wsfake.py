"""The fakes' WebSocket server transport (hookline_testkit/wsfake.py), driven by clients
that are not built on it: websockets' ClientProtocol on a raw trio stream (to send what
a well-behaved client never does: pings, fragments, an unmasked frame, half a request
head) and trio-websocket's client (an independent implementation)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio
from trio_websocket import ConnectionClosed as ClientClosed
from trio_websocket import ConnectionRejected, open_websocket_url
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from hookline_testkit.wsfake import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    serve,
)

LIMIT_S = 10  # generous: the machine may be shared and slow; nothing here is timed


class _RawClient:
    """websockets' client protocol on a plain trio stream, driven step by step."""

    def __init__(self, stream: trio.SocketStream, port: int) -> None:
        self.stream = stream
        self.protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/v1/listen?x=1"))
        self.frames: list[Frame] = []
        self.response: Response | None = None

    @classmethod
    async def connect(cls, port: int) -> _RawClient:
        client = cls(await trio.open_tcp_stream("127.0.0.1", port), port)
        client.protocol.send_request(client.protocol.connect())
        await client.flush()
        await client.read_until(lambda: client.response is not None)
        return client

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
                if isinstance(event, Response):
                    self.response = event
                else:
                    self.frames.append(event)
            await self.flush()


async def _with_server(
    handler: Callable[[WebSocketRequest], Awaitable[None]],
    client: Callable[[WebSocketServer], Awaitable[None]],
    **options: float,
) -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(lambda task_status: serve(
            handler, "127.0.0.1", 0, task_status=task_status, **options
        ))  # fmt: skip
        with trio.fail_after(LIMIT_S):
            await client(server)
        nursery.cancel_scope.cancel()


async def test_a_ping_is_ponged_while_the_handler_reads() -> None:
    got: list[str | bytes] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        got.append(await ws.get_message())

    async def client(server: WebSocketServer) -> None:
        peer = await _RawClient.connect(server.port)
        assert peer.response is not None and peer.response.status_code == 101
        peer.protocol.send_ping(b"are you there")
        await peer.flush()
        await peer.read_until(lambda: any(f.opcode is Opcode.PONG for f in peer.frames))
        pong = next(f for f in peer.frames if f.opcode is Opcode.PONG)
        assert pong.data == b"are you there"
        peer.protocol.send_text(b"done")
        await peer.flush()
        # The handler returned with the connection open: closed with 1000 for it.
        await peer.read_until(lambda: peer.protocol.close_rcvd is not None)
        assert peer.protocol.close_rcvd.code == 1000

    await _with_server(handler, client)
    assert got == ["done"]


async def test_a_fragmented_message_comes_back_whole() -> None:
    got: list[str | bytes] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        got.append(await ws.get_message())
        got.append(await ws.get_message())

    async def client(server: WebSocketServer) -> None:
        peer = await _RawClient.connect(server.port)
        # Each fragment in its own TCP write, a ping between two of them.
        for send in (
            lambda: peer.protocol.send_text(b'{"type":', fin=False),
            lambda: peer.protocol.send_ping(b"p"),
            lambda: peer.protocol.send_continuation('"Résultats"'.encode(), fin=False),
            lambda: peer.protocol.send_continuation(b"}", fin=True),
            lambda: peer.protocol.send_binary(b"\x01\x02", fin=False),
            lambda: peer.protocol.send_continuation(b"\x03", fin=True),
        ):
            send()
            await peer.flush()
            await trio.sleep(0.01)
        await peer.read_until(lambda: peer.protocol.close_rcvd is not None)

    await _with_server(handler, client)
    assert got == ['{"type":"Résultats"}', b"\x01\x02\x03"]


async def test_an_unmasked_frame_fails_the_connection_with_1002() -> None:
    closed: list[ConnectionClosed] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            await ws.get_message()
        except ConnectionClosed as exc:
            closed.append(exc)
            raise

    async def client(server: WebSocketServer) -> None:
        peer = await _RawClient.connect(server.port)
        # A client must mask its frames; this one is sent as a server would send it.
        unmasked = Frame(Opcode.TEXT, b"hello").serialize(mask=False)
        await peer.stream.send_all(unmasked)
        await peer.read_until(lambda: False)  # until the server hangs up
        assert peer.protocol.close_rcvd is not None
        assert peer.protocol.close_rcvd.code == 1002

    await _with_server(handler, client)
    assert [c.reason.code for c in closed] == [1002]


async def test_an_abort_is_a_dropped_connection_to_the_client() -> None:
    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message("before the drop")
        ws.abort()
        try:
            await ws.send_message("after the drop")
        except ConnectionClosed as exc:
            assert exc.reason.code == 1006
        else:
            raise AssertionError("a send after abort() went through")

    async def client(server: WebSocketServer) -> None:
        url = f"ws://127.0.0.1:{server.port}/v1/speak"
        async with open_websocket_url(url) as ws:
            assert await ws.get_message() == "before the drop"
            try:
                await ws.get_message()
            except ClientClosed as exc:
                assert exc.reason.code == 1006  # no close frame: abnormal closure
            else:
                raise AssertionError("the client did not see the connection drop")

    await _with_server(handler, client)


async def test_an_abort_wakes_a_reader_in_another_task() -> None:
    closed: list[int] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()

        async def read() -> None:
            try:
                await ws.get_message()
            except ConnectionClosed as exc:
                closed.append(exc.reason.code)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.sleep(0.05)
            ws.abort()

    async def client(server: WebSocketServer) -> None:
        peer = await _RawClient.connect(server.port)
        await peer.read_until(lambda: False)
        assert peer.protocol.close_rcvd is None

    await _with_server(handler, client)
    assert closed == [1006]


async def test_aclose_completes_the_close_handshake_while_another_task_reads() -> None:
    outcomes: list[object] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()

        async def read() -> None:
            try:
                while True:
                    outcomes.append(await ws.get_message())
            except ConnectionClosed as exc:
                outcomes.append(exc.reason)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.sleep(0.05)
            await ws.aclose(1011, "NET-0001")

    async def client(server: WebSocketServer) -> None:
        url = f"ws://127.0.0.1:{server.port}/v1/listen"
        async with open_websocket_url(url) as ws:
            await ws.send_message("hello")
            try:
                await ws.get_message()
            except ClientClosed as exc:
                assert (exc.reason.code, exc.reason.reason) == (1011, "NET-0001")

    await _with_server(handler, client)
    assert outcomes[0] == "hello"
    assert (outcomes[1].code, outcomes[1].reason) == (1011, "NET-0001")


async def test_the_peers_close_reaches_the_reader_and_is_answered() -> None:
    closed: list[tuple[int, str]] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            await ws.get_message()
        except ConnectionClosed as exc:
            closed.append((exc.reason.code, exc.reason.reason))

    async def client(server: WebSocketServer) -> None:
        peer = await _RawClient.connect(server.port)
        peer.protocol.send_close(4000, "bye")
        await peer.flush()
        await peer.read_until(lambda: False)  # the server closes TCP after its reply
        assert peer.protocol.close_rcvd == Close(4000, "bye")
        assert peer.protocol.state is State.CLOSED

    await _with_server(handler, client)
    assert closed == [(4000, "bye")]


async def test_a_cancelled_read_loses_nothing() -> None:
    got: list[str | bytes] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        with trio.move_on_after(0.05):  # an idle timeout around the read, as the STT fake has
            got.append(await ws.get_message())
        got.append("timed out")
        await ws.send_message("go on")
        got.append(await ws.get_message())

    async def client(server: WebSocketServer) -> None:
        peer = await _RawClient.connect(server.port)
        await peer.read_until(lambda: bool(peer.frames))
        peer.protocol.send_binary(b"late")
        await peer.flush()
        await peer.read_until(lambda: peer.protocol.close_rcvd is not None)

    await _with_server(handler, client)
    assert got == ["timed out", b"late"]


async def test_a_refusal_carries_its_status_headers_and_body() -> None:
    async def handler(request: WebSocketRequest) -> None:
        assert request.path == "/v1/listen?model=nova"
        assert (b"authorization", b"Token nope") in request.headers
        await request.reject(
            401, extra_headers=[(b"content-type", b"application/json")], body=b'{"e":1}'
        )

    async def client(server: WebSocketServer) -> None:
        url = f"ws://127.0.0.1:{server.port}/v1/listen?model=nova"
        try:
            async with open_websocket_url(url, extra_headers=[(b"authorization", b"Token nope")]):
                raise AssertionError("the upgrade was accepted")
        except ConnectionRejected as exc:
            assert exc.status_code == 401
            assert (b"content-type", b"application/json") in exc.headers
            assert exc.body == b'{"e":1}'

    await _with_server(handler, client)


async def test_a_handshake_that_never_completes_times_out_and_frees_the_task() -> None:
    handled: list[WebSocketConnection] = []

    async def handler(request: WebSocketRequest) -> None:
        handled.append(await request.accept())

    async def client(server: WebSocketServer) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(b"GET /v1/listen HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no end
        assert await stream.receive_some(1024) == b""  # the server hung up
        # Closing the socket is the connection task's last step: it is gone too.
        assert server.open_connections == 0
        await stream.aclose()

    await _with_server(handler, client, handshake_timeout_s=0.2)
    assert handled == []


async def test_a_request_that_is_not_an_upgrade_gets_400_without_the_handler() -> None:
    handled: list[WebSocketRequest] = []

    async def handler(request: WebSocketRequest) -> None:
        handled.append(request)

    async def client(server: WebSocketServer) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(b"GET /v1/listen HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        while chunk := await stream.receive_some(4096):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 426 ") or answer.startswith(b"HTTP/1.1 400 ")
        await stream.aclose()

    await _with_server(handler, client)
    assert handled == []

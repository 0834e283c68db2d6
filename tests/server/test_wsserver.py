"""The lean WebSocket path (hookline/wsserver.py behind hookline/frontdoor.py).

Real sockets on loopback: trio-websocket as the client, raw bytes where a client library
would refuse to misbehave. Each test checks one ASGI or RFC 6455 behaviour anycorn gave
the Twilio plugin, now that hookline serves WebSocket upgrades itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from hookline.frontdoor import is_websocket_upgrade
from hookline.frontdoor import serve as serve_connections
from hookline.server import _server_config, asgi_app, serve_asgi

WAIT_S = 20.0  # generous: the machine is shared; outcomes are asserted, not durations
HANDSHAKE = (
    b"GET /ws?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


def _masked(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One client frame (payload < 126 bytes), masked with a zero key (RFC 6455 5.3)."""
    return bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


class Recorder:
    """An ASGI app that records what it received; `script` decides what it does."""

    def __init__(self, script: Callable[..., Awaitable[None]]) -> None:
        self.script = script
        self.scopes: list[dict] = []
        self.received: list[dict] = []
        self.done = trio.Event()

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] == "lifespan":
            await asgi_app([])(scope, receive, send)
            return
        if scope["type"] == "http":
            await asgi_app([])(scope, receive, send)  # /healthz, 404
            return
        self.scopes.append(scope)

        async def recording_receive() -> dict:
            message = await receive()
            self.received.append(message)
            return message

        try:
            await self.script(recording_receive, send)
        finally:
            self.done.set()


async def _serve(nursery: trio.Nursery, app, **config) -> int:
    if not config:
        return await nursery.start(serve_asgi, app, "127.0.0.1", 0)
    server_config = _server_config("127.0.0.1", 0)
    for name, value in config.items():
        setattr(server_config, name, value)
    stop = trio.Event()
    binds = await nursery.start(
        partial(serve_connections, app, server_config, shutdown_trigger=stop.wait)
    )
    return int(binds[0].rsplit(":", 1)[1])


async def _echo(receive, send) -> None:
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "close please":
            await send({"type": "websocket.close", "code": 4001})
            return
        data = {k: message[k] for k in ("text", "bytes") if message.get(k) is not None}
        await send({"type": "websocket.send", **data})


async def _raw(port: int, data: bytes) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(data)
    return stream


async def _upgraded(port: int) -> trio.SocketStream:
    """A raw connection past the 101 (a client sends frames only after it: RFC 6455 4.1)."""
    stream = await _raw(port, HANDSHAKE)
    head = b""
    with trio.fail_after(WAIT_S):
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(65536)
    assert head.startswith(b"HTTP/1.1 101 ")
    return stream


async def _send_then_read(port: int, frames: bytes) -> bytes:
    stream = await _upgraded(port)
    await stream.send_all(frames)
    return await _read_until_closed(stream)


async def _read_until_closed(stream: trio.SocketStream) -> bytes:
    received = b""
    with trio.fail_after(WAIT_S):
        while data := await stream.receive_some(65536):
            received += data
    return received


def test_only_an_http11_get_upgrade_is_a_websocket() -> None:
    assert is_websocket_upgrade(HANDSHAKE)
    assert not is_websocket_upgrade(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not is_websocket_upgrade(HANDSHAKE.replace(b"GET", b"POST"))
    assert not is_websocket_upgrade(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")


async def test_text_and_bytes_round_trip_and_the_scope_is_asgi(nursery) -> None:
    app = Recorder(_echo)
    port = await _serve(nursery, app)
    url = f"ws://127.0.0.1:{port}/twilio/media%20x?token=a%20b"
    headers = [(b"X-Forwarded-For", b"203.0.113.9")]
    with trio.fail_after(WAIT_S):
        async with open_websocket_url(url, extra_headers=headers, subprotocols=["a"]) as ws:
            await ws.send_message("hello")
            assert await ws.get_message() == "hello"
            await ws.send_message(b"\x00\xff")
            assert await ws.get_message() == b"\x00\xff"
    scope = app.scopes[0]
    assert scope["path"] == "/twilio/media x"
    assert scope["raw_path"] == b"/twilio/media%20x"
    assert scope["query_string"] == b"token=a%20b"
    assert scope["scheme"] == "ws"
    host, client_port = scope["client"]
    assert host == "127.0.0.1" and client_port not in (0, port)
    assert scope["server"] == ("127.0.0.1", port)
    assert scope["subprotocols"] == ["a"]
    assert (b"x-forwarded-for", b"203.0.113.9") in scope["headers"]
    assert all(name == name.lower() for name, _ in scope["headers"])


async def test_a_send_cancelled_while_it_waits_for_room_still_sends_whole_frames(
    nursery,
) -> None:
    """A send the socket cannot take at once waits for room, shielded: cancelling it
    there must not leave half a frame on the wire (the peer would fail the connection)."""
    big = bytes(range(256)) * 65536  # 16 MiB: far more than the socket buffers hold

    async def script(receive, send) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        with trio.move_on_after(0.2) as scope:
            await send({"type": "websocket.send", "bytes": big})
        assert scope.cancel_called  # the deadline passed while the send waited
        await send({"type": "websocket.send", "text": "after"})

    app = Recorder(script)
    port = await _serve(nursery, app)
    stream = await _raw(port, HANDSHAKE)  # a raw client: it reads only when told to
    await trio.sleep(0.5)  # the server's send waits for room past its deadline
    head, _, received = (await _read_until_closed(stream)).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert app.done.is_set()
    # Server frames are unmasked: the whole binary frame (64-bit length), then "after",
    # then the 1011 close the app gets for returning with the socket open.
    whole = b"\x82\x7f" + len(big).to_bytes(8, "big") + big + b"\x81\x05after"
    assert received[: len(whole)] == whole
    assert received[len(whole) :][:4] == b"\x88\x02\x03\xf3"


async def test_the_peers_close_code_reaches_the_app(nursery) -> None:
    app = Recorder(_echo)
    port = await _serve(nursery, app)
    with trio.fail_after(WAIT_S):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send_message("hi")
            await ws.get_message()
            await ws.aclose(code=4321)
        await app.done.wait()
    assert app.received[-1] == {"type": "websocket.disconnect", "code": 4321}


async def test_the_apps_close_code_reaches_the_peer(nursery) -> None:
    port = await _serve(nursery, Recorder(_echo))
    with trio.fail_after(WAIT_S):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send_message("close please")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
    assert closed.value.reason.code == 4001


async def test_a_vanished_peer_is_an_abnormal_disconnect(nursery) -> None:
    app = Recorder(_echo)
    port = await _serve(nursery, app)
    stream = await _raw(port, HANDSHAKE)
    with trio.fail_after(WAIT_S):
        assert b" 101 " in await stream.receive_some(65536)
        await stream.aclose()  # no close frame
        await app.done.wait()
    assert app.received[-1] == {"type": "websocket.disconnect", "code": 1006}


async def test_close_before_accept_refuses_the_upgrade_with_403(nursery) -> None:
    async def refuse(receive, send) -> None:
        await receive()
        await send({"type": "websocket.close", "code": 1008})

    port = await _serve(nursery, Recorder(refuse))
    with trio.fail_after(WAIT_S), pytest.raises(ConnectionRejected) as rejected:
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ws"):
            pass
    assert rejected.value.status_code == 403


async def test_a_ping_and_a_close_are_answered_while_the_app_is_not_reading(nursery) -> None:
    async def accept_then_sleep(receive, send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await trio.sleep_forever()

    port = await _serve(nursery, Recorder(accept_then_sleep))
    with trio.fail_after(WAIT_S):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.ping(b"are you there")  # returns once the pong came back
            await ws.aclose(code=1000)  # returns once the close was answered
    assert ws.closed.code == 1000


async def test_frames_sent_with_the_handshake_arrive_after_accept(nursery) -> None:
    app = Recorder(_echo)
    port = await _serve(nursery, app)
    stream = await _raw(port, HANDSHAKE + _masked(0x1, b"early"))
    received = b""
    with trio.fail_after(WAIT_S):
        while b"\x81\x05early" not in received:  # echoed, unmasked
            received += await stream.receive_some(65536)
        assert b" 101 " in received
        await stream.send_all(_masked(0x8, b"\x03\xe8"))
        await _read_until_closed(stream)
    assert {"type": "websocket.receive", "text": "early"} in app.received


async def test_fragments_are_one_message(nursery) -> None:
    app = Recorder(_echo)
    port = await _serve(nursery, app)
    frames = _masked(0x1, b"hel", fin=False) + _masked(0x0, b"lo") + _masked(0x8, b"\x03\xe8")
    await _send_then_read(port, frames)
    assert {"type": "websocket.receive", "text": "hello"} in app.received


async def test_a_protocol_error_closes_with_1002(nursery) -> None:
    app = Recorder(_echo)
    port = await _serve(nursery, app)
    unmasked = b"\x81\x02hi"  # a client frame must be masked
    received = await _send_then_read(port, unmasked)
    assert b"\x88" in received and b"\x03\xea" in received  # close, 1002
    with trio.fail_after(WAIT_S):
        await app.done.wait()
    assert app.received[-1] == {"type": "websocket.disconnect", "code": 1002}


async def test_invalid_utf8_closes_with_1007(nursery) -> None:
    port = await _serve(nursery, Recorder(_echo))
    received = await _send_then_read(port, _masked(0x1, b"\xff"))
    assert b"\x03\xef" in received  # 1007


async def test_a_message_over_the_limit_closes_with_1009(nursery) -> None:
    app = Recorder(_echo)
    port = await _serve(nursery, app, websocket_max_message_size=16)
    received = await _send_then_read(port, _masked(0x1, b"x" * 17))
    assert b"\x03\xf1" in received  # 1009
    with trio.fail_after(WAIT_S):
        await app.done.wait()
    assert app.received[-1] == {"type": "websocket.disconnect", "code": 1009}


async def test_an_app_that_fails_closes_its_socket_only(nursery) -> None:
    async def fail_on_boom(receive, send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            if message.get("text") == "boom":
                raise RuntimeError("the app failed")
            await send({"type": "websocket.send", "text": message["text"]})

    async def fail_before_accept(receive, send) -> None:
        await receive()
        raise RuntimeError("the app failed before accepting")

    scripts = iter([fail_on_boom, fail_on_boom, fail_before_accept])

    async def pick(receive, send) -> None:
        await next(scripts)(receive, send)

    port = await _serve(nursery, Recorder(pick))
    url = f"ws://127.0.0.1:{port}/ws"
    with trio.fail_after(WAIT_S):
        async with open_websocket_url(url) as survivor, open_websocket_url(url) as failing:
            await failing.send_message("boom")
            with pytest.raises(ConnectionClosed) as closed:
                await failing.get_message()
            assert closed.value.reason.code == 1011
            await survivor.send_message("still here")
            assert await survivor.get_message() == "still here"
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket_url(url):
                pass
    assert rejected.value.status_code == 500


async def test_http_on_the_same_port_goes_to_anycorn(nursery) -> None:
    port = await _serve(nursery, Recorder(_echo))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        with trio.fail_after(WAIT_S):
            health = await client.get("/healthz")
            missing = await client.post("/nowhere", content=b"x" * 100_000)
            again = await client.get("/readyz")  # the same keep-alive connection
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert missing.status_code == 404
    assert again.status_code == 200


async def test_a_connection_that_never_sends_is_closed(nursery) -> None:
    port = await _serve(nursery, Recorder(_echo), keep_alive_timeout=0.2)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    assert await _read_until_closed(stream) == b""


async def test_an_app_returning_with_the_socket_open_closes_it_with_1011(nursery) -> None:
    async def accept_then_return(receive, send) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    port = await _serve(nursery, Recorder(accept_then_return))
    with trio.fail_after(WAIT_S):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ws") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
    assert closed.value.reason.code == 1011

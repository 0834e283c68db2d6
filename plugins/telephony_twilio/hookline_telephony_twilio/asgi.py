"""The little ASGI this plugin needs: read a bounded body, answer, refuse a socket.

The routes are plain ASGI apps so that any ASGI server can mount them; hookline's own
server (Hypercorn's trio worker) is one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

__all__ = ["Receive", "Send", "read_body", "refuse_websocket", "respond"]

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None if the client left or it grew past `limit` bytes."""
    body = bytearray()
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            return None
        body += event.get("body", b"")
        if len(body) > limit:
            return None
        if not event.get("more_body", False):
            return bytes(body)


async def respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    *,
    close: bool = False,
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def refuse_websocket(receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "websocket.close", "code": 1008})

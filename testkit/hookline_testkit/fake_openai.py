"""A loopback OpenAI Chat Completions server that frames its answers exactly like OpenAI.

    async with fake_openai() as fake:
        fake.script(text("Hello there."), tool_calls(call("book", '{"day":"mon"}')))
        client = AsyncOpenAI(api_key=fake.api_key, base_url=fake.url)
        ...
        assert fake.requests[0].chat.messages[-1].content == "hi"

It answers `POST /v1/chat/completions` (streaming: SSE `data:` events with a role chunk,
content deltas, tool-call fragments split mid-token, a finish_reason chunk, the usage chunk
with `choices: []` when `stream_options.include_usage`, then `data: [DONE]`; non-streaming:
one JSON completion) and `GET /v1/models`. Every request is answered from a queue of
scripted replies (`fake.script(...)`), then from `fake.responder(request)` when the queue is
empty. Faults on demand: HTTP errors with OpenAI's error body (401, 429 with retry-after,
500), an error object mid-stream, a malformed chunk, a dropped connection, a stall.

Every request is recorded (`fake.requests`): its headers, raw body, the body decoded as a
typed `ChatRequest`, and whether the client disconnected before the response ended.

HTTP/1.1 with h11 over a trio socket: enough control to drop a connection mid-body and to
see the client hang up while we stream.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import h11
import msgspec
import trio

__all__ = [
    "ChatRequest",
    "FakeOpenAI",
    "FakeToolCall",
    "Fault",
    "HttpError",
    "Received",
    "Reply",
    "Responder",
    "Script",
    "call",
    "dropped_connection",
    "fake_openai",
    "http_error",
    "malformed_chunk",
    "mid_stream_error",
    "pieces",
    "rate_limited",
    "server_error",
    "stall",
    "text",
    "tool_calls",
    "unauthorized",
]

log = logging.getLogger("hookline_testkit.fake_openai")

# --------------------------------------------------------------------------- the request


class ReqFunctionCall(msgspec.Struct):
    name: str
    arguments: str


class ReqToolCall(msgspec.Struct):
    id: str
    function: ReqFunctionCall
    type: str = "function"


class ReqMessage(msgspec.Struct):
    role: str
    content: str | list[Any] | None = None
    tool_calls: list[ReqToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class ReqFunction(msgspec.Struct):
    name: str
    description: str = ""
    parameters: dict[str, Any] = {}
    strict: bool | None = None


class ReqTool(msgspec.Struct):
    function: ReqFunction
    type: str = "function"


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


class ChatRequest(msgspec.Struct):
    """The body of a chat completions request, as the fake understood it."""

    model: str
    messages: list[ReqMessage]
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[ReqTool] = []
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None


_chat_request = msgspec.json.Decoder(ChatRequest)


@dataclass
class Received:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    chat: ChatRequest | None = None
    # Set when the client closed the connection before the response was complete.
    disconnected: trio.Event = field(default_factory=trio.Event)
    # Set when the whole response was written.
    completed: trio.Event = field(default_factory=trio.Event)
    status: int = 0
    # True when the fake itself cut the connection (the "drop" fault).
    dropped: bool = False


class _Dropped(Exception):
    """The fake cut the connection on purpose."""


# --------------------------------------------------------------------------- the script


@dataclass(frozen=True)
class FakeToolCall:
    name: str
    arguments: str  # the whole JSON text; the fake splits it into fragments
    id: str = ""  # empty: "call_<n>"


Fault = Literal["error", "malformed", "drop", "stall"]


@dataclass(frozen=True)
class Reply:
    """A successful (200) answer, possibly broken mid-stream by a fault.

    The text goes out in token-sized pieces; tool-call arguments in `fragment` character
    pieces (so JSON tokens are split). `fault` happens after `fault_after` content pieces
    (text pieces and argument fragments both count).
    """

    text: str = ""
    tool_calls: Sequence[FakeToolCall] = ()
    finish_reason: str | None = None  # None: "tool_calls" when there are any, else "stop"
    prompt_tokens: int | None = None  # None: estimated from the request
    cached_tokens: int = 0
    ttft_s: float | None = None  # None: the fake's default
    tokens_per_s: float | None = None  # None: the fake's default (0 = no pacing)
    fragment: int = 3
    interleave: bool = False  # send parallel tool calls' fragments round-robin
    fault: Fault | None = None
    fault_after: int = 0
    error_message: str = "The server had an error while processing your request."


@dataclass(frozen=True)
class HttpError:
    """A non-2xx answer with OpenAI's error body."""

    status: int
    message: str
    type: str
    code: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


Script = Reply | HttpError
Responder = Callable[["Received"], Script]


def text(s: str, **kw: Any) -> Reply:
    return Reply(text=s, **kw)


def call(name: str, arguments: str, id: str = "") -> FakeToolCall:
    return FakeToolCall(name=name, arguments=arguments, id=id)


def tool_calls(*calls: FakeToolCall, text: str = "", **kw: Any) -> Reply:
    return Reply(text=text, tool_calls=calls, **kw)


def http_error(
    status: int, message: str, type: str, code: str | None = None, **headers: str
) -> HttpError:
    hdrs = tuple((k.replace("_", "-"), v) for k, v in headers.items())
    return HttpError(status=status, message=message, type=type, code=code, headers=hdrs)


def unauthorized() -> HttpError:
    return http_error(
        401,
        "Incorrect API key provided: sk-bad. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        "invalid_api_key",
    )


def rate_limited(retry_after: float = 1.0, code: str = "rate_limit_exceeded") -> HttpError:
    return http_error(
        429,
        "Rate limit reached for gpt-4o: Limit 500, Used 500, Requested 1.",
        "requests",
        code,
        retry_after=f"{retry_after:g}",
    )


def server_error(status: int = 500) -> HttpError:
    return http_error(
        status, "The server had an error while processing your request.", "server_error"
    )


def mid_stream_error(after: int = 1, message: str = "The server had an error.") -> Reply:
    return Reply(
        text="Let me check that for you.", fault="error", fault_after=after, error_message=message
    )


def malformed_chunk(after: int = 1) -> Reply:
    return Reply(text="Let me check that for you.", fault="malformed", fault_after=after)


def dropped_connection(after: int = 1) -> Reply:
    return Reply(text="Let me check that for you.", fault="drop", fault_after=after)


def stall(after: int = 0) -> Reply:
    """Send `after` pieces, then nothing (the connection stays open until the client leaves)."""
    return Reply(text="Let me check that for you.", fault="stall", fault_after=after)


# --------------------------------------------------------------------------- the response chunks


class _FunctionDelta(msgspec.Struct, omit_defaults=True):
    name: str | None = None
    arguments: str | None = None


class _ToolCallDelta(msgspec.Struct, omit_defaults=True):
    index: int
    id: str | None = None
    type: str | None = None
    function: _FunctionDelta | None = None


class _Delta(msgspec.Struct, omit_defaults=True):
    role: str | None = None
    # `content` and `refusal` appear as explicit nulls in OpenAI's role chunk: keep them.
    content: str | msgspec.UnsetType | None = msgspec.UNSET
    refusal: msgspec.UnsetType | None = msgspec.UNSET
    tool_calls: list[_ToolCallDelta] | None = None


class _Choice(msgspec.Struct):
    index: int
    delta: _Delta
    logprobs: None = None
    finish_reason: str | None = None


class _PromptDetails(msgspec.Struct):
    cached_tokens: int = 0
    audio_tokens: int = 0


class _CompletionDetails(msgspec.Struct):
    reasoning_tokens: int = 0
    audio_tokens: int = 0
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0


class _Usage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: _PromptDetails
    completion_tokens_details: _CompletionDetails


class _Chunk(msgspec.Struct, kw_only=True):
    # Field order is OpenAI's wire order.
    id: str
    object: str = "chat.completion.chunk"
    created: int
    model: str
    service_tier: str = "default"
    system_fingerprint: str = "fp_fake0001"
    choices: list[_Choice]
    usage: _Usage | msgspec.UnsetType | None = msgspec.UNSET


_encode = msgspec.json.Encoder().encode

# Roughly tokens: a run of up to 4 word characters, or one other character, with its
# leading spaces (so "Hello there." -> "Hel", "lo", " there", "."-ish pieces).
_PIECE = re.compile(r"\s*(?:\w{1,4}|[^\w\s])|\s+")


def pieces(s: str) -> list[str]:
    return _PIECE.findall(s)


def _estimate_tokens(chat: ChatRequest | None) -> int:
    if chat is None:
        return 0
    chars = sum(len(m.content) if isinstance(m.content, str) else 0 for m in chat.messages)
    return max(1, chars // 4) + 3 * len(chat.messages)


# --------------------------------------------------------------------------- the server


class FakeOpenAI:
    """State and script of one fake server. Build it with `fake_openai()`."""

    def __init__(
        self,
        *,
        api_key: str = "sk-fake-test-key",
        model: str = "gpt-4o-2024-08-06",
        ttft_s: float = 0.0,
        tokens_per_s: float = 0.0,
    ) -> None:
        self.api_key = api_key
        self.model = model
        self.ttft_s = ttft_s
        self.tokens_per_s = tokens_per_s
        self.url = ""  # "http://127.0.0.1:PORT/v1" once started
        self.requests: list[Received] = []
        # TCP connections accepted so far: how a test sees whether a client reused one.
        self.connections = 0
        self._queue: deque[Script] = deque()
        self.responder: Responder = lambda _req: Reply(text="Okay.")
        self._ids = itertools.count(1)
        self._received = trio.Condition()

    # ----------------------------------------------------------------- scripting

    def script(self, *replies: Script) -> None:
        """Queue replies; each chat request takes the next one."""
        self._queue.extend(replies)

    @property
    def pending(self) -> int:
        """Scripted replies not used yet."""
        return len(self._queue)

    @property
    def chats(self) -> list[Received]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    async def wait_requests(self, n: int) -> None:
        """Wait until `n` requests in all have arrived."""
        async with self._received:
            while len(self.requests) < n:
                await self._received.wait()

    # ----------------------------------------------------------------- HTTP

    async def serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                got = await _read_request(conn, stream)
                if got is None:
                    return
                req, body = got
                keep = await self._dispatch(conn, stream, req, body)
                if not keep or conn.our_state is not h11.DONE:
                    return
                try:
                    conn.start_next_cycle()
                except h11.LocalProtocolError:
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            return
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _dispatch(
        self, conn: h11.Connection, stream: trio.SocketStream, req: h11.Request, body: bytes
    ) -> bool:
        path = req.target.decode().split("?", 1)[0]
        headers = {k.decode().lower(): v.decode() for k, v in req.headers}
        rec = Received(req.method.decode(), path, headers, body)
        if path.endswith("/chat/completions") and req.method == b"POST":
            try:
                rec.chat = _chat_request.decode(body)
            except msgspec.DecodeError as e:
                rec.chat = None
                log.warning("fake openai: undecodable request body: %s", e)
        async with self._received:
            self.requests.append(rec)
            self._received.notify_all()

        if headers.get("authorization") != f"Bearer {self.api_key}":
            return await self._error(conn, stream, rec, unauthorized())
        if path.endswith("/models") and req.method == b"GET":
            return await self._models(conn, stream, rec)
        if not (path.endswith("/chat/completions") and req.method == b"POST"):
            err = http_error(
                404,
                f"Unknown request URL: {req.method.decode()} {path}.",
                "invalid_request_error",
                "unknown_url",
            )
            return await self._error(conn, stream, rec, err)
        if rec.chat is None:
            err = http_error(
                400, "We could not parse the JSON body of your request.", "invalid_request_error"
            )
            return await self._error(conn, stream, rec, err)

        reply = self._queue.popleft() if self._queue else self.responder(rec)
        if isinstance(reply, HttpError):
            return await self._error(conn, stream, rec, reply)
        if not rec.chat.stream:
            return await self._complete(conn, stream, rec, reply)
        return await self._stream(conn, stream, rec, reply)

    async def _send(self, conn: h11.Connection, stream: trio.SocketStream, event: Any) -> None:
        data = conn.send(event)
        if data:
            await stream.send_all(data)

    async def _json(
        self,
        conn: h11.Connection,
        stream: trio.SocketStream,
        rec: Received,
        status: int,
        body: bytes,
        extra: Sequence[tuple[str, str]] = (),
    ) -> bool:
        rec.status = status
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("x-request-id", f"req_{next(self._ids)}"),
            *extra,
        ]
        await self._send(conn, stream, h11.Response(status_code=status, headers=headers))
        await self._send(conn, stream, h11.Data(data=body))
        await self._send(conn, stream, h11.EndOfMessage())
        rec.completed.set()
        return True

    async def _error(
        self, conn: h11.Connection, stream: trio.SocketStream, rec: Received, err: HttpError
    ) -> bool:
        body = _encode(
            {"error": {"message": err.message, "type": err.type, "param": None, "code": err.code}}
        )
        return await self._json(conn, stream, rec, err.status, body, err.headers)

    async def _models(self, conn: h11.Connection, stream: trio.SocketStream, rec: Received) -> bool:
        data = [
            {"id": m, "object": "model", "created": 1715367049, "owned_by": "system"}
            for m in ("gpt-4o", "gpt-4o-mini", self.model)
        ]
        return await self._json(conn, stream, rec, 200, _encode({"object": "list", "data": data}))

    async def _complete(
        self, conn: h11.Connection, stream: trio.SocketStream, rec: Received, reply: Reply
    ) -> bool:
        """A non-streaming answer (used by nothing in hookline, but servers must have it)."""
        calls = [
            {
                "id": c.id or f"call_{i}",
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for i, c in enumerate(reply.tool_calls, 1)
        ]
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.text or None,
            "refusal": None,
        }
        if calls:
            message["tool_calls"] = calls
        prompt = (
            reply.prompt_tokens if reply.prompt_tokens is not None else _estimate_tokens(rec.chat)
        )
        completion = len(pieces(reply.text)) + sum(len(c.arguments) // 3 for c in reply.tool_calls)
        body = {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion",
            "created": 1694268190,
            "model": self.model,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": _finish(reply)}
            ],
            "usage": msgspec.to_builtins(_usage(prompt, completion, reply.cached_tokens)),
        }
        return await self._json(conn, stream, rec, 200, _encode(body))

    async def _stream(
        self, conn: h11.Connection, stream: trio.SocketStream, rec: Received, reply: Reply
    ) -> bool:
        rec.status = 200
        headers = [
            ("content-type", "text/event-stream; charset=utf-8"),
            ("cache-control", "no-cache"),
            ("x-request-id", f"req_{next(self._ids)}"),
            ("openai-processing-ms", "42"),
        ]
        await self._send(conn, stream, h11.Response(status_code=200, headers=headers))
        keep = True
        # Watch the socket while we write: in HTTP/1.1 the client sends nothing more until
        # the response ends, so EOF (or an error) here means it hung up mid-stream.
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                try:
                    while True:
                        data = await stream.receive_some(65536)
                        if not data:
                            break
                        conn.receive_data(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    if rec.dropped:
                        return
                rec.disconnected.set()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            try:
                keep = await self._write_events(conn, stream, rec, reply)
            except _Dropped:
                keep = False
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                rec.disconnected.set()
                keep = False
            nursery.cancel_scope.cancel()
        return keep and not rec.disconnected.is_set()

    async def _write_events(
        self, conn: h11.Connection, stream: trio.SocketStream, rec: Received, reply: Reply
    ) -> bool:
        assert rec.chat is not None
        chunk_id = f"chatcmpl-{next(self._ids)}"
        include_usage = bool(rec.chat.stream_options and rec.chat.stream_options.include_usage)
        ttft = self.ttft_s if reply.ttft_s is None else reply.ttft_s
        tps = self.tokens_per_s if reply.tokens_per_s is None else reply.tokens_per_s
        gap = 1.0 / tps if tps > 0 else 0.0

        def chunk(choices: list[_Choice], usage: Any = msgspec.UNSET) -> bytes:
            if include_usage and usage is msgspec.UNSET:
                usage = None
            c = _Chunk(
                id=chunk_id, created=1694268190, model=self.model, choices=choices, usage=usage
            )
            return b"data: " + _encode(c) + b"\n\n"

        async def event(data: bytes) -> None:
            await self._send(conn, stream, h11.Data(data=data))

        await trio.sleep(ttft)
        content = None if (reply.tool_calls and not reply.text) else ""
        await event(chunk([_Choice(0, _Delta(role="assistant", content=content, refusal=None))]))

        sent = 0

        async def piece(data: bytes) -> bool:
            """Send one content piece; False once the fault took over the stream."""
            nonlocal sent
            if reply.fault is not None and sent >= reply.fault_after:
                await self._fault(conn, stream, rec, reply, event)
                return False
            if sent and gap:
                await trio.sleep(gap)
            await event(data)
            sent += 1
            return True

        for p in pieces(reply.text):
            if not await piece(chunk([_Choice(0, _Delta(content=p))])):
                return False

        for frag in _tool_fragments(reply, next(self._ids)):
            if not await piece(chunk([_Choice(0, _Delta(tool_calls=[frag]))])):
                return False

        if reply.fault is not None:  # a fault scheduled after all pieces
            await self._fault(conn, stream, rec, reply, event)
            return False

        await event(chunk([_Choice(0, _Delta(), finish_reason=_finish(reply))]))
        if include_usage:
            prompt = (
                reply.prompt_tokens
                if reply.prompt_tokens is not None
                else _estimate_tokens(rec.chat)
            )
            await event(chunk([], _usage(prompt, sent, reply.cached_tokens)))
        await event(b"data: [DONE]\n\n")
        await self._send(conn, stream, h11.EndOfMessage())
        rec.completed.set()
        return True

    async def _fault(
        self,
        conn: h11.Connection,
        stream: trio.SocketStream,
        rec: Received,
        reply: Reply,
        event: Callable[[bytes], Any],
    ) -> None:
        if reply.fault == "error":
            # What OpenAI sends when generation fails after the 200: an error object.
            body = {
                "error": {
                    "message": reply.error_message,
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            }
            await event(b"data: " + _encode(body) + b"\n\n")
            await self._send(conn, stream, h11.EndOfMessage())
        elif reply.fault == "malformed":
            await event(_MALFORMED)
            await self._send(conn, stream, h11.EndOfMessage())
        elif reply.fault == "drop":
            # Close mid-body: no terminating chunk, so the client sees an incomplete read.
            rec.dropped = True
            await stream.aclose()
            raise _Dropped
        elif reply.fault == "stall":
            await trio.sleep_forever()


# A chunk cut off mid-object: not JSON.
_MALFORMED = (
    b'data: {"id":"chatcmpl-x","object":"chat.completion.chunk",'
    b'"choices":[{"index":0,"delta":{"content":"oops"\n\n'
)


def _finish(reply: Reply) -> str:
    if reply.finish_reason is not None:
        return reply.finish_reason
    return "tool_calls" if reply.tool_calls else "stop"


def _usage(prompt: int, completion: int, cached: int) -> _Usage:
    return _Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=_PromptDetails(cached_tokens=cached),
        completion_tokens_details=_CompletionDetails(),
    )


def _tool_fragments(reply: Reply, serial: int) -> list[_ToolCallDelta]:
    """The tool-call deltas in wire order: a head (id, type, name, "") per call, then its
    arguments in `reply.fragment`-character pieces, per call or round-robin."""
    per_call: list[list[_ToolCallDelta]] = []
    for index, c in enumerate(reply.tool_calls):
        cid = c.id or f"call_{serial}_{index}"
        frags = [
            _ToolCallDelta(
                index=index,
                id=cid,
                type="function",
                function=_FunctionDelta(name=c.name, arguments=""),
            )
        ]
        n = max(1, reply.fragment)
        for i in range(0, len(c.arguments), n):
            frags.append(
                _ToolCallDelta(
                    index=index, function=_FunctionDelta(arguments=c.arguments[i : i + n])
                )
            )
        per_call.append(frags)
    if not reply.interleave:
        return [f for frags in per_call for f in frags]
    out = []
    for row in itertools.zip_longest(*per_call):
        out.extend(f for f in row if f is not None)
    return out


async def _read_request(
    conn: h11.Connection, stream: trio.SocketStream
) -> tuple[h11.Request, bytes] | None:
    """Read one whole request; None when the client closed the idle connection."""
    req: h11.Request | None = None
    body = bytearray()
    while True:
        ev = conn.next_event()
        if ev is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(data)
            if not data and conn.their_state is h11.IDLE:
                return None
            continue
        if isinstance(ev, h11.Request):
            req = ev
        elif isinstance(ev, h11.Data):
            body += ev.data
        elif isinstance(ev, h11.EndOfMessage):
            assert req is not None
            return req, bytes(body)
        elif isinstance(ev, h11.ConnectionClosed):
            return None


@asynccontextmanager
async def fake_openai(**kwargs: Any) -> AsyncIterator[FakeOpenAI]:
    """Run a fake on 127.0.0.1 with an ephemeral port for the duration of the block."""
    fake = FakeOpenAI(**kwargs)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, fake.serve, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        fake.url = f"http://127.0.0.1:{port}/v1"
        try:
            yield fake
        finally:
            nursery.cancel_scope.cancel()

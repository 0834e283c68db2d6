"""A loopback Deepgram text-to-speech server: the streaming `/v1/speak` WebSocket and the
REST `POST /v1/speak`, speaking the real wire protocol (protocols.md §3).

    async with serve_fake_deepgram_tts(chars_per_second=40) as fake:
        settings = DeepgramTTSSettings(url=fake.url, base_url=fake.base_url)
        ...
        assert fake.flushed_texts == ["Hello there."]

Streaming: `Metadata` on open; `Speak` text is buffered; on `Flush` the buffer becomes
mu-law audio whose duration follows the text (`chars_per_second`), sent after `ttfb_s` in
`chunk_bytes` pieces `chunk_interval_s` apart, then `Flushed{sequence_id}` (counting from
0 per connection). `Clear` drops the buffer and stops in-flight audio before the next
chunk, then answers `Cleared`. More than `flush_limit` flushes within `flush_window_s` on
one connection get a `Warning` and are ignored (the text stays buffered), like Deepgram.
`Close` closes the socket. `accept_delay_s` holds each WebSocket upgrade's answer that long
(the TCP + TLS + upgrade round trips to the real service).

`await fake.drop_connections()` aborts every open socket at once.
`gate` (a trio.Event) holds every flush's audio until it is set, for deterministic tests.
Faults are plain attributes you can flip at any time: `reject_auth`, `drop_after_bytes`
(one-shot: abort the TCP connection once that many audio bytes went out on it),
`rest_errors` (HTTP statuses the next REST requests get, in order), `extra_frames`
(raw frames sent right after `Metadata`, e.g. malformed JSON).

Everything received is recorded: `connections` (query parameters, speaks, flushes and
their times, clears per socket), `flush_times`, `warnings_sent`, `rest_requests`;
`open_sockets` counts the WebSocket connections open now.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11
import msgspec
import trio

from hookline.audio import SAMPLE_RATE, tone_mulaw

from .wsfake import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve

__all__ = [
    "FakeDeepgramTTS",
    "RestRequest",
    "SpeakConnection",
    "fake_tts_audio",
    "serve_fake_deepgram_tts",
]

log = logging.getLogger("hookline_testkit.fake_deepgram_tts")

# One second of a 200 Hz tone (a whole number of periods), tiled to make "speech".
_TONE = tone_mulaw(1.0, hz=200.0)


def fake_tts_audio(text: str, chars_per_second: float) -> bytes:
    """The mu-law audio the fake produces for `text`: len(text)/cps seconds of tone."""
    n = round(len(text) / chars_per_second * SAMPLE_RATE)
    return (_TONE * (n // len(_TONE) + 1))[:n]


async def _until_closed(loop: Any, *args: Any) -> None:
    """Run one side of a connection; the peer closing the socket simply ends it."""
    try:
        await loop(*args)
    except ConnectionClosed:
        return


# --------------------------------------------------------------------------- wire messages
# The fake keeps its own copy of Deepgram's message shapes on purpose: it is a second,
# independent reading of protocols.md, so a mistake in the plugin's Structs is not
# mirrored here (the tests would then pass against a wrong protocol).


class _Speak(msgspec.Struct, tag="Speak", tag_field="type"):
    text: str


class _Flush(msgspec.Struct, tag="Flush", tag_field="type"):
    pass


class _Clear(msgspec.Struct, tag="Clear", tag_field="type"):
    pass


class _Close(msgspec.Struct, tag="Close", tag_field="type"):
    pass


_client_message = msgspec.json.Decoder(_Speak | _Flush | _Clear | _Close)


class _Metadata(msgspec.Struct, tag="Metadata", tag_field="type"):
    request_id: str
    model_name: str
    model_version: str = "2025-01-01.0"
    model_uuid: str = "00000000-0000-0000-0000-000000000000"


class _Flushed(msgspec.Struct, tag="Flushed", tag_field="type"):
    sequence_id: int


class _Cleared(msgspec.Struct, tag="Cleared", tag_field="type"):
    sequence_id: int


class _Warning(msgspec.Struct, tag="Warning", tag_field="type"):
    description: str
    code: str


class _RestError(msgspec.Struct):
    err_code: str
    err_msg: str
    request_id: str


class _RestBody(msgspec.Struct):
    text: str


_encode = msgspec.json.Encoder().encode
_rest_body = msgspec.json.Decoder(_RestBody)


# --------------------------------------------------------------------------- records


@dataclass
class SpeakConnection:
    """What one WebSocket connection received."""

    params: dict[str, str]
    speaks: list[str] = field(default_factory=list)
    flushes: list[str] = field(default_factory=list)  # the buffered text of each Flush
    clears: int = 0
    closed_by_client: bool = False
    dropped: bool = False
    audio_bytes_sent: int = 0
    flush_times: list[float] = field(default_factory=list)  # of the accepted flushes


@dataclass
class RestRequest:
    text: str
    params: dict[str, str]
    status: int


@dataclass
class _Job:
    text: str
    sequence_id: int
    epoch: int


class _ConnState:
    def __init__(self) -> None:
        self.buffer: list[str] = []
        self.epoch = 0  # bumped by Clear: jobs of an older epoch are dropped
        self.flush_count = 0
        self.flush_times: list[float] = []
        self.send_lock = trio.Lock()
        self.job_scope: trio.CancelScope | None = None


# --------------------------------------------------------------------------- the fake


class FakeDeepgramTTS:
    """Settings, fault switches and records of one fake; see the module docstring."""

    def __init__(
        self,
        *,
        api_key: str = "test-deepgram-key",
        chars_per_second: float = 50.0,
        ttfb_s: float = 0.0,
        chunk_bytes: int = 1600,
        chunk_interval_s: float = 0.0,
        flush_limit: int = 20,
        flush_window_s: float = 60.0,
        accept_delay_s: float = 0.0,
    ) -> None:
        self.api_key = api_key
        self.chars_per_second = chars_per_second
        self.ttfb_s = ttfb_s
        self.chunk_bytes = chunk_bytes
        self.chunk_interval_s = chunk_interval_s
        self.flush_limit = flush_limit
        self.flush_window_s = flush_window_s
        self.accept_delay_s = accept_delay_s
        # faults
        self.reject_auth = False
        self.drop_after_bytes: int | None = None
        self.rest_errors: list[int] = []
        self.rest_retry_after: str | None = None
        self.extra_frames: list[str | bytes] = []
        # when set, each flush's synthesis waits for this event (deterministic ordering)
        self.gate: trio.Event | None = None
        # records
        self.connections: list[SpeakConnection] = []
        self.rejected_connections = 0
        self.flush_times: list[float] = []
        self.warnings_sent = 0
        self.rest_requests: list[RestRequest] = []
        self.ignored_messages: list[str | bytes] = []
        self.url = ""  # ws://127.0.0.1:P/v1/speak
        self.base_url = ""  # http://127.0.0.1:Q
        self._requests = 0
        self._live: dict[WebSocketConnection, SpeakConnection] = {}

    # ------------------------------------------------------------------ queries

    def audio_for(self, text: str) -> bytes:
        return fake_tts_audio(text, self.chars_per_second)

    @property
    def flushed_texts(self) -> list[str]:
        """The text of every accepted Flush, over all connections, in order."""
        return [t for c in self.connections for t in c.flushes]

    @property
    def rest_texts(self) -> list[str]:
        """Texts of REST requests that were answered with audio."""
        return [r.text for r in self.rest_requests if r.status == 200]

    def max_flushes_in_window(
        self, window_s: float | None = None, connection: SpeakConnection | None = None
    ) -> int:
        """The most accepted flushes any `window_s` span (default: the limit's) contained,
        over all connections or on one (Deepgram's limit is per connection)."""
        window = self.flush_window_s if window_s is None else window_s
        times = self.flush_times if connection is None else connection.flush_times
        best = 0
        start = 0
        for end, t in enumerate(times):
            while t - times[start] >= window:
                start += 1
            best = max(best, end - start + 1)
        return best

    @property
    def open_sockets(self) -> int:
        return len(self._live)

    def _request_id(self) -> str:
        self._requests += 1
        return f"fake-{self._requests:08d}"

    def _auth_ok(self, value: str | None) -> bool:
        return not self.reject_auth and value == f"Token {self.api_key}"

    # ------------------------------------------------------------------ WebSocket

    async def _ws_handler(self, request: WebSocketRequest) -> None:
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        if not self._auth_ok(headers.get("authorization")):
            self.rejected_connections += 1
            body = _RestError("INVALID_AUTH", "Invalid credentials.", self._request_id())
            await request.reject(
                401,
                extra_headers=[
                    (b"content-type", b"application/json"),
                    (b"dg-error", b"Invalid credentials."),
                ],
                body=_encode(body),
            )
            return
        split = urlsplit(request.path)
        params = {k: v[-1] for k, v in parse_qs(split.query).items()}
        problem = _bad_stream_params(params)
        if problem:
            self.rejected_connections += 1
            body = _RestError("INVALID_QUERY_PARAMETER", problem, self._request_id())
            await request.reject(
                400,
                extra_headers=[
                    (b"content-type", b"application/json"),
                    (b"dg-error", problem.encode()),
                ],
                body=_encode(body),
            )
            return
        if self.accept_delay_s:
            await trio.sleep(self.accept_delay_s)
        ws = await request.accept()
        conn = SpeakConnection(params=params)
        self.connections.append(conn)
        self._live[ws] = conn
        state = _ConnState()
        model = params.get("model", "aura-asteria-en")
        try:
            await ws.send_message(_encode(_Metadata(self._request_id(), model)).decode())
            for frame in self.extra_frames:
                await ws.send_message(frame)
            send_jobs, receive_jobs = trio.open_memory_channel[_Job](math.inf)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    _until_closed, self._synthesize_loop, ws, conn, state, receive_jobs
                )
                await _until_closed(self._receive_loop, ws, conn, state, send_jobs)
                nursery.cancel_scope.cancel()
        except ConnectionClosed:
            pass
        finally:
            self._live.pop(ws, None)

    async def drop_connections(self) -> int:
        """Abort every open socket now (a network failure); returns how many."""
        live = list(self._live.items())
        for ws, conn in live:
            conn.dropped = True
            ws.abort()
        await trio.lowlevel.checkpoint()
        return len(live)

    async def _receive_loop(
        self,
        ws: WebSocketConnection,
        conn: SpeakConnection,
        state: _ConnState,
        jobs: trio.MemorySendChannel[_Job],
    ) -> None:
        while True:
            raw = await ws.get_message()
            try:
                msg = _client_message.decode(raw)
            except msgspec.DecodeError:
                self.ignored_messages.append(raw)
                continue
            match msg:
                case _Speak(text=text):
                    conn.speaks.append(text)
                    state.buffer.append(text)
                case _Flush():
                    now = trio.current_time()
                    state.flush_times = [
                        t for t in state.flush_times if now - t < self.flush_window_s
                    ]
                    if len(state.flush_times) >= self.flush_limit:
                        self.warnings_sent += 1
                        warning = _Warning(
                            f"Flush limit of {self.flush_limit} per minute exceeded; flush ignored",
                            "FLUSH_LIMIT_EXCEEDED",
                        )
                        async with state.send_lock:
                            await ws.send_message(_encode(warning).decode())
                        continue
                    state.flush_times.append(now)
                    self.flush_times.append(now)
                    conn.flush_times.append(now)
                    text = "".join(state.buffer)
                    state.buffer.clear()
                    conn.flushes.append(text)
                    jobs.send_nowait(_Job(text, state.flush_count, state.epoch))
                    state.flush_count += 1
                case _Clear():
                    conn.clears += 1
                    state.buffer.clear()
                    async with state.send_lock:
                        # Under the send lock no audio chunk is half-way out: after this
                        # the synthesizer sees the new epoch before its next chunk.
                        state.epoch += 1
                        if state.job_scope is not None:
                            state.job_scope.cancel()
                        cleared = _Cleared(max(state.flush_count - 1, 0))
                        await ws.send_message(_encode(cleared).decode())
                case _Close():
                    conn.closed_by_client = True
                    await ws.aclose()
                    return

    async def _synthesize_loop(
        self,
        ws: WebSocketConnection,
        conn: SpeakConnection,
        state: _ConnState,
        jobs: trio.MemoryReceiveChannel[_Job],
    ) -> None:
        async for job in jobs:
            if job.epoch != state.epoch:
                continue
            with trio.CancelScope() as scope:
                state.job_scope = scope
                if self.gate is not None:
                    await self.gate.wait()
                await trio.sleep(self.ttfb_s)
                audio = self.audio_for(job.text)
                for i in range(0, len(audio), self.chunk_bytes):
                    chunk = audio[i : i + self.chunk_bytes]
                    async with state.send_lock:
                        if job.epoch != state.epoch:
                            break
                        if (
                            self.drop_after_bytes is not None
                            and conn.audio_bytes_sent >= self.drop_after_bytes
                        ):
                            self.drop_after_bytes = None
                            conn.dropped = True
                            ws.abort()  # no close frame: what a network failure looks like
                            return
                        await ws.send_message(chunk)
                        conn.audio_bytes_sent += len(chunk)
                    if self.chunk_interval_s:
                        await trio.sleep(self.chunk_interval_s)
                else:
                    async with state.send_lock:
                        if job.epoch == state.epoch:
                            done = _Flushed(job.sequence_id)
                            await ws.send_message(_encode(done).decode())
            state.job_scope = None

    # ------------------------------------------------------------------ REST

    async def _http_connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await _next_event(conn, stream)
                if not isinstance(request, h11.Request):
                    return
                body = b""
                while True:
                    event = await _next_event(conn, stream)
                    if isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:
                        return
                status, headers, payload = self._rest_answer(request, body)
                headers.append((b"content-length", str(len(payload)).encode()))
                await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
                await stream.send_all(conn.send(h11.Data(data=payload)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            await stream.aclose()

    def _rest_answer(
        self, request: h11.Request, body: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        split = urlsplit(request.target.decode())
        params = {k: v[-1] for k, v in parse_qs(split.query).items()}
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        request_id = self._request_id()
        json_headers = [
            (b"content-type", b"application/json"),
            (b"dg-request-id", request_id.encode()),
        ]

        def error(status: int, code: str, message: str) -> tuple[int, list, bytes]:
            return status, json_headers, _encode(_RestError(code, message, request_id))

        if request.method != b"POST" or split.path != "/v1/speak":
            return error(404, "NOT_FOUND", f"no route {request.method.decode()} {split.path}")
        try:
            text = _rest_body.decode(body).text
        except msgspec.DecodeError as e:
            self.rest_requests.append(RestRequest("", params, 400))
            return error(400, "INVALID_JSON", f"bad request body: {e}")
        if not self._auth_ok(headers.get("authorization")):
            self.rest_requests.append(RestRequest(text, params, 401))
            return error(401, "INVALID_AUTH", "Invalid credentials.")
        if self.rest_errors:
            status = self.rest_errors.pop(0)
            self.rest_requests.append(RestRequest(text, params, status))
            status_code, hdrs, payload = error(
                status,
                "TOO_MANY_REQUESTS" if status == 429 else "INTERNAL_SERVER_ERROR",
                "Too many requests" if status == 429 else "Internal server error",
            )
            if self.rest_retry_after is not None:
                hdrs = [*hdrs, (b"retry-after", self.rest_retry_after.encode())]
            return status_code, hdrs, payload
        self.rest_requests.append(RestRequest(text, params, 200))
        audio = self.audio_for(text)
        return (
            200,
            [
                (b"content-type", b"audio/basic"),
                (b"dg-request-id", request_id.encode()),
                (b"dg-model-name", params.get("model", "aura-asteria-en").encode()),
                (b"dg-char-count", str(len(text)).encode()),
            ],
            audio,
        )


_WS_ENCODINGS = {"linear16", "mulaw", "alaw"}
_WS_SAMPLE_RATES = {"8000", "16000", "24000", "32000", "48000"}


def _bad_stream_params(params: dict[str, str]) -> str:
    """What Deepgram would refuse in a /v1/speak query (protocols.md §3), or ""."""
    encoding = params.get("encoding", "linear16")
    if encoding not in _WS_ENCODINGS:
        return f"encoding {encoding!r} is not supported for streaming"
    rate = params.get("sample_rate", "24000")
    if rate not in _WS_SAMPLE_RATES:
        return f"sample_rate {rate!r} is not supported"
    if "container" in params:
        return "container is not supported for streaming"
    return ""


async def _next_event(conn: h11.Connection, stream: trio.SocketStream) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await stream.receive_some(65536))


@asynccontextmanager
async def serve_fake_deepgram_tts(**options: float | int | str) -> AsyncIterator[FakeDeepgramTTS]:
    """Run the fake's WebSocket and HTTP servers on 127.0.0.1 for the block's duration."""
    fake = FakeDeepgramTTS(**options)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve, fake._ws_handler, "127.0.0.1", 0))
        fake.url = f"ws://127.0.0.1:{server.port}/v1/speak"
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        await nursery.start(trio.serve_listeners, fake._http_connection, listeners)
        fake.base_url = f"http://127.0.0.1:{port}"
        try:
            yield fake
        finally:
            nursery.cancel_scope.cancel()

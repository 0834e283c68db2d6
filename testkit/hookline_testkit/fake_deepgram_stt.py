"""A loopback Deepgram live transcription server (`/v1/listen`, protocols.md §2).

    async with fake_deepgram_stt() as fake:
        fake.script("call-1", ["I need an oil change.", "Tomorrow morning."])
        settings = DeepgramSTTSettings(url=fake.url)          # ws://127.0.0.1:PORT/v1/listen
        ...                                                   # key: fake.api_key
        assert fake.connections[0].param("model") == "nova-2-phonecall"

A real WebSocket server (wsfake.py: websockets' sans-I/O protocol on the socket) that
checks `Authorization: Token <key>` (401 with Deepgram's `err_code` JSON body otherwise)
and the query parameters (400 for bad ones), decodes mu-law and detects speech by energy
(`rms_mulaw`; a tone is speech, 0xFF is silence). It cannot recognise speech, so the
words of each utterance come from a script: per call (the call id arrives as
`extra=call_id:<id>`), else from `fake.default_script`.

Everything runs on the audio clock of the connection (seconds of audio received on it,
as the real service counts), not on wall time, so a client may send faster than real
time and the results are the same. While speech lasts it sends interim `Results` every
`interim_every_s`; after `endpointing` ms of silence a final with `speech_final`; after
`utterance_end_ms` of silence past the last word an `UtteranceEnd`; `SpeechStarted` at
each onset with `vad_events`; an empty final every `silence_final_s` of pure silence.
`Finalize` answers with a `from_finalize` final; `CloseStream` with the last final, then
`Metadata`, then close 1000. No frame for `idle_timeout_s` (wall time): close 1011
`NET-0001`. A script line is used up only by its final, so after a dropped connection the
replayed audio of the same utterance gets the same words.

Faults on demand: `fake.reject_auth`, `fake.fail_next(count, status)`, `fake.drop_next(
after_s= | after_audio_s= | at_utterance=N, how="abort"|"close")`, `fake.final_delay_s`
(slow finals), `fake.on_open_raw` (raw text frames, e.g. malformed JSON, sent right after
the next connection opens). `fake.connections` logs every connection: headers, parameters,
call id, audio received, control messages, frames sent, close code.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Literal
from urllib.parse import parse_qs, urlsplit

import msgspec
import trio

from hookline.audio import SAMPLE_RATE, rms_mulaw

from .wsfake import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve

__all__ = [
    "DEFAULT_API_KEY",
    "Drop",
    "FakeDeepgramSTT",
    "ListenConnection",
    "fake_deepgram_stt",
]

log = logging.getLogger("hookline_testkit.fake_deepgram_stt")

DEFAULT_API_KEY = "dg-test-key"
FRAME_S = 0.020
MODEL_UUID = "6b28e919-8427-4f32-9847-492e2efd7daf"
BOOL_PARAMS = (
    "interim_results", "vad_events", "smart_format", "punctuate", "numerals",
    "profanity_filter", "diarize", "multichannel", "dictation", "detect_entities",
    "mip_opt_out",
)  # fmt: skip

# --------------------------------------------------------------------------- wire messages


class Word(msgspec.Struct):
    word: str
    start: float
    end: float
    confidence: float
    punctuated_word: str


class Alternative(msgspec.Struct):
    transcript: str
    confidence: float
    words: list[Word]


class Channel(msgspec.Struct):
    alternatives: list[Alternative]


class ModelInfo(msgspec.Struct):
    name: str = "2-phonecall-nova"
    version: str = "2024-01-09.29447"
    arch: str = "nova-2"


class ResultsMetadata(msgspec.Struct):
    request_id: str
    model_uuid: str = MODEL_UUID
    model_info: ModelInfo = msgspec.field(default_factory=ModelInfo)


class Results(msgspec.Struct, tag="Results", tag_field="type"):
    channel_index: list[int]
    duration: float
    start: float
    is_final: bool
    speech_final: bool
    from_finalize: bool
    channel: Channel
    metadata: ResultsMetadata


class SpeechStartedMsg(msgspec.Struct, tag="SpeechStarted", tag_field="type"):
    channel: list[int]
    timestamp: float


class UtteranceEndMsg(msgspec.Struct, tag="UtteranceEnd", tag_field="type"):
    channel: list[int]
    last_word_end: float


class MetadataMsg(msgspec.Struct, tag="Metadata", tag_field="type"):
    transaction_key: str
    request_id: str
    sha256: str
    created: str
    duration: float
    channels: int
    models: list[str]
    model_info: dict[str, ModelInfo]


class ErrorBody(msgspec.Struct):
    err_code: str
    err_msg: str
    request_id: str


class Control(msgspec.Struct):
    """A client text frame: KeepAlive, Finalize or CloseStream."""

    type: str


ServerMessage = Results | SpeechStartedMsg | UtteranceEndMsg | MetadataMsg

_encode = msgspec.json.Encoder().encode
_control_decoder = msgspec.json.Decoder(Control)

# --------------------------------------------------------------------------- test-facing state


@dataclass
class Drop:
    """Drop one connection: after `after_s` of wall time, after `after_audio_s` of audio,
    or right after the first interim of its utterance number `at_utterance` (1, 2, ...).
    `how="abort"` closes TCP without a close frame (a network error); `"close"` sends
    1011 `NET-0000` (Deepgram's internal error)."""

    after_s: float | None = None
    after_audio_s: float | None = None
    at_utterance: int | None = None
    how: Literal["abort", "close"] = "abort"
    call_id: str | None = None


@dataclass(eq=False)
class ListenConnection:
    """What the fake saw on one connection attempt."""

    number: int
    path: str
    params: dict[str, list[str]]
    headers: dict[str, str]
    call_id: str | None
    request_id: str
    rejected: int | None = None  # HTTP status when the upgrade was refused
    audio: bytearray = field(default_factory=bytearray)
    audio_messages: list[int] = field(default_factory=list)  # bytes in each audio message
    empty_frames: int = 0
    controls: list[str] = field(default_factory=list)
    control_times: list[float] = field(default_factory=list)  # trio.current_time() of each
    sent: list[str] = field(default_factory=list)  # JSON text frames sent to the client
    messages: list[ServerMessage] = field(default_factory=list)  # the same, typed (not raw)
    close_code: int | None = None
    close_reason: str | None = None
    dropped: bool = False
    closed: trio.Event = field(default_factory=trio.Event)

    def param(self, name: str) -> str | None:
        values = self.params.get(name)
        return values[-1] if values else None

    @property
    def audio_seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    @property
    def keepalives(self) -> int:
        return self.controls.count("KeepAlive")


class _Script:
    """One call's utterances. The current line stays until a final uses it up."""

    def __init__(self, take_default: Callable[[], str]) -> None:
        self.lines: deque[str] = deque()
        self.current: str | None = None
        self._take_default = take_default

    def peek(self) -> str:
        if self.current is None:
            self.current = self.lines.popleft() if self.lines else self._take_default()
        return self.current

    def consume(self) -> None:
        self.current = None


class FakeDeepgramSTT:
    """State, script and fault switches of one fake server; see the module docstring."""

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        idle_timeout_s: float = 10.0,
        interim_every_s: float = 0.25,
        words_per_s: float = 3.0,
        silence_final_s: float = 3.0,
        speech_threshold: float = 500.0,
        min_utterance_end_ms: int = 1000,
    ) -> None:
        self.api_key = api_key
        self.idle_timeout_s = idle_timeout_s
        self.interim_every_s = interim_every_s
        self.words_per_s = words_per_s
        self.silence_final_s = silence_final_s
        self.speech_threshold = speech_threshold
        self.min_utterance_end_ms = min_utterance_end_ms
        self.port = 0
        self.connections: list[ListenConnection] = []
        self.default_script: deque[str] = deque()
        self.fallback_text = ""  # words of an utterance no script covers
        # Faults.
        self.reject_auth = False
        self.final_delay_s = 0.0
        self.on_open_raw: list[str] = []
        self._fail_next: deque[tuple[int, str, str]] = deque()
        self._drops: list[Drop] = []
        self._scripts: dict[str, _Script] = {}
        self._numbers = itertools.count(1)
        self._changed = trio.Event()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/listen"

    # ------------------------------------------------------------------ scripting

    def script(self, call_id: str, lines: Sequence[str]) -> None:
        """The words of each utterance the caller `call_id` will say, in order."""
        self._script_for(call_id).lines.extend(lines)

    def expect(self, call_id: str, text: str) -> None:
        """One more utterance for `call_id` (the hook ScriptedLeg and the suites use)."""
        self._script_for(call_id).lines.append(text)

    def fail_next(
        self,
        count: int = 1,
        status: int = 503,
        err_code: str = "SERVICE_UNAVAILABLE",
        err_msg: str = "The service is temporarily unavailable.",
    ) -> None:
        """Refuse the next `count` upgrades with this HTTP status."""
        self._fail_next.extend([(status, err_code, err_msg)] * count)

    def drop_next(self, **kwargs: object) -> Drop:
        """Arm a one-shot drop for the next connection (of `call_id`, if given)."""
        drop = Drop(**kwargs)  # type: ignore[arg-type]
        self._drops.append(drop)
        return drop

    async def wait_until(self, predicate: Callable[[], bool], limit_s: float = 5.0) -> None:
        """Wait until `predicate()` holds; it is re-checked whenever the fake's log changes."""
        with trio.fail_after(limit_s):
            while not predicate():
                await self._changed.wait()

    def finals(self, call_id: str | None = None) -> list[str]:
        """Transcripts of the non-empty finals sent (to `call_id`'s connections)."""
        return [
            msg.channel.alternatives[0].transcript
            for conn in self.connections
            if call_id is None or conn.call_id == call_id
            for msg in conn.messages
            if isinstance(msg, Results) and msg.is_final and msg.channel.alternatives[0].transcript
        ]

    # ------------------------------------------------------------------ internals

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _script_for(self, call_id: str | None) -> _Script:
        key = call_id or ""
        if key not in self._scripts:
            self._scripts[key] = _Script(self._take_default)
        return self._scripts[key]

    def _take_default(self) -> str:
        return self.default_script.popleft() if self.default_script else self.fallback_text

    def _take_drop(self, call_id: str | None) -> Drop | None:
        for drop in self._drops:
            if drop.call_id is None or drop.call_id == call_id:
                self._drops.remove(drop)
                return drop
        return None

    async def _handle(self, request: WebSocketRequest) -> None:
        parts = urlsplit(request.path)
        params = parse_qs(parts.query, keep_blank_values=True)
        extra = dict(item.split(":", 1) for item in params.get("extra", []) if ":" in item)
        conn = ListenConnection(
            number=next(self._numbers),
            path=parts.path,
            params=params,
            headers={k.decode().lower(): v.decode() for k, v in request.headers},
            call_id=extra.get("call_id"),
            request_id=str(uuid.uuid4()),
        )
        self.connections.append(conn)
        self._notify()
        refusal = self._refusal(conn)
        if refusal is not None:
            status, err_code, err_msg = refusal
            conn.rejected = status
            body = _encode(ErrorBody(err_code, err_msg, conn.request_id))
            await request.reject(
                status,
                extra_headers=[
                    (b"content-type", b"application/json"),
                    (b"dg-request-id", conn.request_id.encode()),
                    (b"dg-error", err_msg.encode()),
                ],
                body=body,
            )
            conn.closed.set()
            self._notify()
            return
        ws = await request.accept()
        try:
            await _Session(self, ws, conn).run()
        finally:
            conn.closed.set()
            self._notify()

    def _refusal(self, conn: ListenConnection) -> tuple[int, str, str] | None:
        if conn.path != "/v1/listen":
            return 404, "NOT_FOUND", f"no such endpoint {conn.path}"
        auth = conn.headers.get("authorization", "")
        scheme, _, key = auth.partition(" ")
        if self.reject_auth or scheme.lower() != "token" or key != self.api_key:
            return 401, "INVALID_AUTH", "Invalid credentials."
        if self._fail_next:
            return self._fail_next.popleft()
        problem = self._check_params(conn)
        if problem:
            return 400, "Bad Request", problem
        return None

    def _check_params(self, conn: ListenConnection) -> str | None:
        p = conn.param
        encoding = p("encoding")
        if encoding is not None:
            if encoding != "mulaw":
                return f"this fake decodes encoding=mulaw only, not {encoding!r}"
            if p("sample_rate") is None:
                return "sample_rate is required when encoding is set"
        if p("sample_rate") not in (None, str(SAMPLE_RATE)):
            return f"this fake takes sample_rate={SAMPLE_RATE} only"
        if p("channels") not in (None, "1"):
            return "this fake takes channels=1 only"
        for name in BOOL_PARAMS:
            if p(name) not in (None, "true", "false"):
                return f"{name} must be true or false, not {p(name)!r}"
        endpointing = p("endpointing")
        if endpointing not in (None, "false", "true") and not endpointing.isdigit():
            return f"endpointing must be a number of milliseconds or false, not {endpointing!r}"
        utterance_end = p("utterance_end_ms")
        if utterance_end is not None:
            if not utterance_end.isdigit():
                return f"utterance_end_ms must be an integer, not {utterance_end!r}"
            if p("interim_results") != "true":
                return "utterance_end_ms requires interim_results=true"
            if int(utterance_end) < self.min_utterance_end_ms:
                return f"utterance_end_ms must be at least {self.min_utterance_end_ms}"
        return None


# --------------------------------------------------------------------------- one connection


class _Close(msgspec.Struct):
    code: int
    reason: str | None = None


class _Abort(msgspec.Struct):
    pass


class _Out(msgspec.Struct):
    text: str
    message: ServerMessage | None = None


@dataclass
class _Segment:
    onset: float
    last_speech: float
    text: str
    next_interim: float


class _Session:
    """One accepted connection: reads audio and control frames, writes results in order."""

    def __init__(self, fake: FakeDeepgramSTT, ws: WebSocketConnection, conn: ListenConnection):
        self.fake = fake
        self.ws = ws
        self.conn = conn
        p = conn.param
        self.interim = p("interim_results") == "true"
        self.vad_events = p("vad_events") == "true"
        endpointing = p("endpointing")
        self.endpointing = endpointing != "false"
        if not self.endpointing:
            self.endpoint_s = 0.5  # finals still come after a pause, without speech_final
        elif endpointing and endpointing.isdigit():
            self.endpoint_s = int(endpointing) / 1000
        else:
            self.endpoint_s = 0.010  # Deepgram's default
        ue = p("utterance_end_ms")
        self.utterance_end_s = int(ue) / 1000 if ue else None
        self.script = fake._script_for(conn.call_id)
        self.drop = fake._take_drop(conn.call_id)
        self.frame_bytes = round(SAMPLE_RATE * FRAME_S)
        self.partial = bytearray()
        self.frames = 0
        self.window_start = 0.0
        self.seg: _Segment | None = None
        self.utterances = 0  # speech onsets on this connection
        self.utterance_end_from: float | None = None  # last word end awaiting UtteranceEnd
        self.finished = False  # CloseStream seen, closing or dropped: ignore further input
        self.out_tx, self.out_rx = trio.open_memory_channel[_Out | _Close | _Abort](math.inf)

    @property
    def now(self) -> float:
        return self.frames * FRAME_S

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer)
            if self.drop is not None and self.drop.after_s is not None:
                nursery.start_soon(self._drop_after, self.drop.after_s)
            for raw in self.fake.on_open_raw:
                self.out_tx.send_nowait(_Out(raw))
            self.fake.on_open_raw = []
            try:
                await self._reader()
            except ConnectionClosed as exc:
                if exc.reason is not None and self.conn.close_code is None:
                    self.conn.close_code = exc.reason.code
                    self.conn.close_reason = exc.reason.reason
            nursery.cancel_scope.cancel()

    async def _reader(self) -> None:
        # The idle deadline moves with every message, but a cancel scope per message
        # (50 a second per call) was a tenth of the load generator's core: one scope
        # lasts until the deadline it was opened with, and is renewed from the last
        # message's time when that deadline comes (a cancelled read loses nothing).
        idle_s = self.fake.idle_timeout_s
        last_input = trio.current_time()
        while not self.finished:
            with trio.CancelScope(deadline=last_input + idle_s):
                while not self.finished:
                    message = await self.ws.get_message()
                    last_input = trio.current_time()
                    if self.finished:  # dropped or closing meanwhile: input is ignored
                        break
                    self._on_message(message)
            if not self.finished and trio.current_time() >= last_input + idle_s:
                self._close(1011, "NET-0001")
        while True:  # closing: read on until the close handshake or the drop ends it
            await self.ws.get_message()

    def _on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self._on_audio(message)
        else:
            self._on_control(message)
        self.fake._notify()

    async def _writer(self) -> None:
        async for item in self.out_rx:
            if isinstance(item, _Close):
                self.conn.close_code, self.conn.close_reason = item.code, item.reason
                self.fake._notify()
                await self.ws.aclose(item.code, item.reason)
                return
            if isinstance(item, _Abort):
                self.conn.dropped = True
                self.conn.close_code = 1006
                self.fake._notify()
                # No close frame: close the TCP stream under the WebSocket (a network error).
                self.ws.abort()
                return
            if (
                self.fake.final_delay_s
                and isinstance(item.message, Results)
                and item.message.is_final
            ):
                await trio.sleep(self.fake.final_delay_s)
            try:
                await self.ws.send_message(item.text)
            except ConnectionClosed:
                return
            self.conn.sent.append(item.text)
            if item.message is not None:
                self.conn.messages.append(item.message)
            self.fake._notify()

    async def _drop_after(self, seconds: float) -> None:
        await trio.sleep(seconds)
        self._drop_now()

    def _drop_now(self) -> None:
        if self.drop is None or self.finished:
            return  # already dropped or closing
        how = self.drop.how
        self.drop = None
        self.finished = True
        self.out_tx.send_nowait(_Abort() if how == "abort" else _Close(1011, "NET-0000"))

    def _close(self, code: int, reason: str | None = None) -> None:
        self.finished = True
        self.out_tx.send_nowait(_Close(code, reason))

    def _send(self, message: ServerMessage) -> None:
        self.out_tx.send_nowait(_Out(_encode(message).decode(), message))

    # ------------------------------------------------------------------ input

    def _on_control(self, text: str) -> None:
        try:
            kind = _control_decoder.decode(text).type
        except msgspec.DecodeError:
            kind = "malformed"
        self.conn.controls.append(kind)
        self.conn.control_times.append(trio.current_time())
        if kind == "Finalize":
            if self.seg is not None:
                self._final(speech_final=False, from_finalize=True)
            else:
                self._results(self.window_start, self.now, "", [], True, False, True)
                self.window_start = self.now
        elif kind == "CloseStream":
            if self.seg is not None:
                self._final(speech_final=False, from_finalize=False)
            self._send(self._metadata())
            self._close(1000)

    def _on_audio(self, data: bytes) -> None:
        if not data:
            # Deepgram treats an empty binary frame as the end of the stream.
            self.conn.empty_frames += 1
            self._send(self._metadata())
            self._close(1000)
            return
        self.conn.audio += data
        self.conn.audio_messages.append(len(data))
        self.partial += data
        while len(self.partial) >= self.frame_bytes:
            frame = bytes(self.partial[: self.frame_bytes])
            del self.partial[: self.frame_bytes]
            self._on_frame(frame)
        drop = self.drop
        if (
            drop
            and drop.after_audio_s is not None
            and self.conn.audio_seconds >= drop.after_audio_s
        ):
            self._drop_now()

    def _on_frame(self, frame: bytes) -> None:
        t0 = self.now
        self.frames += 1
        t1 = self.now
        seg = self.seg
        if rms_mulaw(frame) >= self.fake.speech_threshold:
            if seg is None:
                seg = self.seg = _Segment(
                    t0, t1, self.script.peek(), t0 + self.fake.interim_every_s
                )
                self.utterances += 1
                self.utterance_end_from = None  # speech resumed before the gap
                if self.vad_events:
                    self._send(SpeechStartedMsg([0, 1], round(t0, 3)))
            seg.last_speech = t1
            if self.interim and t1 >= seg.next_interim:
                seg.next_interim = t1 + self.fake.interim_every_s
                elapsed = t1 - seg.onset
                tokens = seg.text.split()
                shown = min(len(tokens), 1 + int(elapsed * self.fake.words_per_s))
                words = _words(tokens[:shown], seg.onset, t1)
                self._results(
                    self.window_start, t1, " ".join(tokens[:shown]), words, False, False, False
                )
                if self.drop is not None and self.drop.at_utterance == self.utterances:
                    self._drop_now()
        elif seg is not None:
            if t1 - seg.last_speech >= self.endpoint_s - 1e-9:
                self._final(speech_final=self.endpointing, from_finalize=False)
        elif self.utterance_end_from is not None:
            if t1 - self.utterance_end_from >= self.utterance_end_s - 1e-9:  # type: ignore[operator]
                self._send(UtteranceEndMsg([0, 1], round(self.utterance_end_from, 3)))
                self.utterance_end_from = None
        elif t1 - self.window_start >= self.fake.silence_final_s:
            self._results(self.window_start, t1, "", [], True, False, False)
            self.window_start = t1

    # ------------------------------------------------------------------ output

    def _final(self, *, speech_final: bool, from_finalize: bool) -> None:
        seg = self.seg
        assert seg is not None
        tokens = seg.text.split()
        words = _words(tokens, seg.onset, seg.last_speech)
        self._results(
            self.window_start, self.now, seg.text, words, True, speech_final, from_finalize
        )
        self.window_start = self.now
        self.script.consume()
        self.seg = None
        if words and self.utterance_end_s is not None:
            self.utterance_end_from = words[-1].end

    def _results(
        self,
        start: float,
        end: float,
        transcript: str,
        words: list[Word],
        is_final: bool,
        speech_final: bool,
        from_finalize: bool,
    ) -> None:
        self._send(
            Results(
                channel_index=[0, 1],
                duration=round(end - start, 3),
                start=round(start, 3),
                is_final=is_final,
                speech_final=speech_final,
                from_finalize=from_finalize,
                channel=Channel([Alternative(transcript, 0.98 if transcript else 0.0, words)]),
                metadata=ResultsMetadata(self.conn.request_id),
            )
        )

    def _metadata(self) -> MetadataMsg:
        return MetadataMsg(
            transaction_key="deprecated",
            request_id=self.conn.request_id,
            sha256=hashlib.sha256(self.conn.audio).hexdigest(),
            created=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            duration=round(self.conn.audio_seconds, 3),
            channels=1,
            models=[MODEL_UUID],
            model_info={MODEL_UUID: ModelInfo()},
        )


def _words(tokens: Sequence[str], start: float, end: float) -> list[Word]:
    """Spread the tokens evenly over [start, end]."""
    if not tokens:
        return []
    step = (end - start) / len(tokens)
    return [
        Word(
            word=token.strip(".,!?;:\"'").lower() or token,
            start=round(start + i * step, 3),
            end=round(start + (i + 1) * step, 3),
            confidence=0.98,
            punctuated_word=token,
        )
        for i, token in enumerate(tokens)
    ]


# --------------------------------------------------------------------------- running it


@asynccontextmanager
async def fake_deepgram_stt(**options: object) -> AsyncIterator[FakeDeepgramSTT]:
    """Serve a `FakeDeepgramSTT` on 127.0.0.1 (ephemeral port) for the block's duration.

    Options are `FakeDeepgramSTT`'s keyword arguments (api_key, idle_timeout_s, ...)."""
    fake = FakeDeepgramSTT(**options)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve, fake._handle, "127.0.0.1", 0))
        fake.port = server.port
        try:
            yield fake
        finally:
            nursery.cancel_scope.cancel()

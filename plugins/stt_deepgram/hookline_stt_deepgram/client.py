"""Deepgram live transcription (`/v1/listen`) over hookline's lean
WebSocket client (`hookline.WebSocketClient`).

deepgram-sdk's live sockets are asyncio-only, so this speaks the protocol itself
(protocols.md §2): binary frames of caller audio, JSON control frames (KeepAlive,
Finalize, CloseStream), typed JSON results back.

One stream per call. Its tasks live in the stream's nursery:

- the supervisor owns the WebSocket: it connects, and when the connection ends
  unexpectedly it reconnects within `reconnect_timeout_s`, replays the audio sent since
  the last final result and carries on. Deepgram's timestamps count from the start of
  each connection; `_Connection.offset` is where that connection's audio starts on the
  call's audio clock, so every time handed to the engine is seconds of call audio.
- per connection, a sender (audio and ordered control messages; `send()` never waits on
  the network), a keep-alive and the reader, which turns results into events.

Failures the engine must see (bad key, refused parameters, an outage beyond the bound)
are raised from `open()` before the call starts, or from iteration during the call.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

import trio

from hookline import (
    AudioFormat,
    Backoff,
    CallInfo,
    CallLog,
    ProviderContext,
    ProviderError,
    ProviderProtocolError,
    ProviderUnavailable,
    SpeechStarted,
    STTEvent,
    Transcript,
    UtteranceEnd,
    WebSocketClient,
    WebSocketClosed,
    WebSocketRejected,
    WebSocketUnreachable,
    error_for_status,
    parse_retry_after,
    reraise_single,
)

from .messages import (
    CLOSE_STREAM,
    FINALIZE,
    KEEP_ALIVE,
    Alternative,
    ListenMetadata,
    ListenResults,
    ListenSpeechStarted,
    ListenUtteranceEnd,
    decode_error_body,
    decode_server_message,
)
from .settings import BYTES_PER_SAMPLE, DeepgramSTTSettings

__all__ = ["PROVIDER", "DeepgramSTT", "DeepgramSTTStream", "listen_url"]

PROVIDER = "stt/deepgram"
log = logging.getLogger("hookline.stt.deepgram")

# Between connect attempts, and after a connection that died at once; the outage bound
# (`reconnect_timeout_s`) is the deadline. The loop is the supervisor's own, not the
# core's `retry`, because a dropped connection and a failed connect share one outage.
_BACKOFF = Backoff(first_s=0.05, max_s=1.0)
_STABLE_S = 1.0  # a connection that lived this long resets the backoff
_LOGGED_IGNORED = 20  # per stream; the rest are only counted
_SPEECH_STARTED_DUP_S = 0.25  # a replay re-detects speech onsets at (almost) the same time


class _Stalled(Exception):
    """A send did not complete within `send_timeout_s`: treat the connection as dead."""


def _flag(value: bool) -> str:
    return "true" if value else "false"


def listen_url(settings: DeepgramSTTSettings, fmt: AudioFormat, call_id: str) -> str:
    """The `/v1/listen` URL with every query parameter; the call id travels in `extra`."""
    s = settings
    params: list[tuple[str, str]] = [
        ("model", s.model),
        ("language", s.language),
        ("encoding", fmt.encoding),
        ("sample_rate", str(fmt.sample_rate)),
        ("channels", str(fmt.channels)),
        ("interim_results", _flag(s.interim_results)),
        ("endpointing", "false" if s.endpointing_ms is None else str(s.endpointing_ms)),
        ("vad_events", _flag(s.vad_events)),
        ("smart_format", _flag(s.smart_format)),
        ("punctuate", _flag(s.punctuate)),
    ]
    if s.utterance_end_ms is not None:
        params.append(("utterance_end_ms", str(s.utterance_end_ms)))
    params += [("keyterm", term) for term in s.keyterms]
    params += [("keywords", word) for word in s.keywords]
    if s.tag:
        params.append(("tag", s.tag))
    params.append(("extra", f"call_id:{call_id}"))
    return s.url + ("&" if urlsplit(s.url).query else "?") + urlencode(params)


class DeepgramSTT:
    """The `stt` provider "deepgram": one instance per process, one stream per call."""

    def __init__(
        self,
        settings: DeepgramSTTSettings,
        *,
        api_key: str,
        thread_limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        self.settings = settings
        self._api_key = api_key
        self._thread_limiter = thread_limiter
        self._tls: ssl.SSLContext | None = None

    @classmethod
    def create(cls, settings: DeepgramSTTSettings, ctx: ProviderContext) -> DeepgramSTT:
        """The ProviderSpec factory: the key comes from the env var the config names."""
        key = ctx.secret(settings.api_key_env, key="api_key_env")
        return cls(settings, api_key=key, thread_limiter=ctx.thread_limiter)

    async def prepare(self) -> None:
        """Build the TLS context now (`Runtime.start`), before any call."""
        await self._tls_context()

    async def _tls_context(self) -> ssl.SSLContext | None:
        """The process's one TLS context for `wss://` (None for `ws://`). Built in a
        worker thread: loading the CA bundle takes ~25 ms of CPU, which every call in
        flight would otherwise wait out on the trio thread at each connect."""
        if urlsplit(self.settings.url).scheme != "wss":
            return None
        if self._tls is None:
            self._tls = await trio.to_thread.run_sync(
                ssl.create_default_context, limiter=self._thread_limiter
            )
        return self._tls

    @asynccontextmanager
    async def open(self, fmt: AudioFormat, call: CallInfo) -> AsyncIterator[DeepgramSTTStream]:
        """Connect (raising ProviderAuthError/ProviderUnavailable/ProviderProtocolError at
        once), yield the stream, and on a normal exit send CloseStream and wait briefly
        for the last results."""
        tls = await self._tls_context()
        stream = DeepgramSTTStream(self.settings, self._api_key, fmt, call, tls=tls)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(stream._supervise)
                if stream._open_error is not None:
                    # Raised after the nursery, so the caller sees the error itself.
                    nursery.cancel_scope.cancel()
                else:
                    finished = False
                    try:
                        yield stream
                        finished = True
                    finally:
                        if finished:
                            await stream._close()
                        stream._closed = True
                        nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # Our tasks never raise, so a group only wraps the caller's own exception.
            reraise_single(group)
        if stream._open_error is not None:
            raise stream._open_error


def _describe_close(conn: _Connection) -> str:
    if conn.close_code in (None, 1006):
        return "the connection dropped"
    detail = f"{conn.close_code} {conn.close_reason or ''}".strip()
    return f"Deepgram closed it ({detail})"


@dataclass(eq=False)
class _Connection:
    ws: WebSocketClient
    offset: int  # call-audio byte position of this connection's first byte
    sent_to: int  # call-audio byte position sent (or in flight) on this connection
    number: int
    scope: trio.CancelScope | None = None
    opened_at: float = field(default_factory=trio.current_time)
    sending_since: float | None = None  # when the send in progress began
    close_code: int | None = None
    close_reason: str | None = None
    ended_because: str = ""


class DeepgramSTTStream:
    """Caller audio in (`send`), transcript events out (`async for event in stream`)."""

    def __init__(
        self,
        settings: DeepgramSTTSettings,
        api_key: str,
        fmt: AudioFormat,
        call: CallInfo,
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._s = settings
        self._tls = tls  # shared by the provider's streams; None for ws://
        self._log = CallLog(log, {"call_id": call.call_id})
        if fmt.encoding not in BYTES_PER_SAMPLE:
            raise ProviderProtocolError(
                f"audio encoding {fmt.encoding!r} cannot be streamed "
                f"(supported: {', '.join(sorted(BYTES_PER_SAMPLE))})",
                provider=PROVIDER,
            )
        if (fmt.encoding, fmt.sample_rate, fmt.channels) != (
            settings.encoding,
            settings.sample_rate,
            settings.channels,
        ):
            self._log.warning(
                "the call's audio is %s/%d Hz/%d ch, not the configured %s/%d Hz/%d ch; "
                "sending the call's format",
                fmt.encoding, fmt.sample_rate, fmt.channels,
                settings.encoding, settings.sample_rate, settings.channels,
            )  # fmt: skip
        self._align = BYTES_PER_SAMPLE[fmt.encoding] * fmt.channels
        self._bytes_per_s = fmt.sample_rate * self._align
        self._max_chunk = self._bytes_per_s // 2
        # The sender is woken once this much unsent audio has gathered (`send_chunk_ms`).
        self._min_chunk = max(1, settings.send_chunk_ms * self._bytes_per_s // 1000)
        self._url = listen_url(settings, fmt, call.call_id)
        self._headers = [("Authorization", f"Token {api_key}")]

        # Audio since the last final result (what a reconnect replays), on the call's
        # audio clock: _buf[0] is call-audio byte _buf_start.
        self._buf = bytearray()
        self._buf_start = 0
        # Control messages, each sent once the audio before `position` was sent.
        self._controls: list[tuple[int, str]] = []
        self._wake = trio.Event()
        self._sender_idle = False  # the sender task waits for `_wake` with nothing to send
        self._last_sent_at = 0.0
        self._conn: _Connection | None = None
        self._connections = 0

        self._events_tx, self._events_rx = trio.open_memory_channel[STTEvent](1000)
        self._open_error: ProviderError | None = None
        self._error: ProviderError | None = None
        self._closing = False
        self._closed = False
        self._done = trio.Event()

        self._final_through = 0.0
        self._last_speech_started: float | None = None
        self._last_utterance_end: float | None = None

        #: Reconnects so far in this call, and server messages ignored (malformed/unknown).
        self.reconnects = 0
        self.ignored_messages = 0

    # ------------------------------------------------------------------ public surface

    async def send(self, audio: bytes) -> None:
        """Queue caller audio; never waits for the network: a ready chunk is written at
        once when the socket takes it, else the sender task drains it.

        Audio after the stream closed or failed is dropped: the failure itself is raised
        from iteration, once."""
        if not audio or self._closed or self._error is not None:
            return  # (an empty binary frame would make Deepgram close the stream)
        self._buf += audio
        conn = self._conn
        if conn is None:
            self._wake.set()  # no connection yet: the next one's sender sends it
        elif self._buf_start + len(self._buf) - conn.sent_to >= self._min_chunk:
            # A chunk is ready: written from this task when the socket takes it at once
            # (no hop to the sender task per 20 ms frame), else the sender finishes it.
            if not (self._sender_idle and self._send_now(conn)):
                self._wake.set()
        excess = len(self._buf) - int(self._s.replay_max_s * self._bytes_per_s)
        if excess > self._bytes_per_s:  # trim in steps of a second, not every frame
            self._trim_to(self._buf_start + excess, replay_cap=True)

    async def finalize(self) -> None:
        """Ask Deepgram to finalize everything sent so far (a `from_finalize` result)."""
        if self._closed or self._error is not None:
            return
        self._queue_control(FINALIZE)

    def __aiter__(self) -> DeepgramSTTStream:
        return self

    async def __anext__(self) -> STTEvent:
        try:
            return await self._events_rx.receive()
        except trio.EndOfChannel:
            if self._error is not None:
                raise self._error from None
            raise StopAsyncIteration from None

    @property
    def audio_seconds(self) -> float:
        """Seconds of call audio sent into the stream so far."""
        return (self._buf_start + len(self._buf)) / self._bytes_per_s

    # ------------------------------------------------------------------ audio buffer

    def _queue_control(self, message: str) -> None:
        self._controls.append((self._buf_start + len(self._buf), message))
        self._wake.set()

    def _trim_to(self, position: int, *, replay_cap: bool = False) -> None:
        """Forget audio before call-audio byte `position` (never unsent audio)."""
        conn = self._conn
        if conn is not None:
            position = min(position, conn.sent_to)
        elif not replay_cap:
            return
        position -= position % self._align
        drop = position - self._buf_start
        if drop > 0:
            del self._buf[:drop]
            self._buf_start = position
            if replay_cap:
                self._log.debug("replay buffer full: dropped %d bytes of old audio", drop)

    # ------------------------------------------------------------------ supervisor

    async def _supervise(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED):
        started = False
        outage_since: float | None = None  # when the current outage began
        why = ""
        retry_after: float | None = None
        failures = 0  # waits so far in this outage (resets after a stable connection)
        try:
            while True:
                conn: _Connection | None = None
                try:
                    async with AsyncExitStack() as stack:
                        limit_s = self._s.connect_timeout_s
                        if outage_since is not None:  # stay within the outage bound
                            left = outage_since + self._s.reconnect_timeout_s - trio.current_time()
                            limit_s = max(0.05, min(limit_s, left))
                        ws = await self._connect(stack, limit_s)
                        self._connections += 1
                        conn = _Connection(
                            ws, self._buf_start, self._buf_start, number=self._connections
                        )
                        if not started:
                            started = True
                            task_status.started()
                        elif outage_since is not None:
                            self._log.info(
                                "reconnected to Deepgram after %.2f s; replaying %.2f s of audio",
                                trio.current_time() - outage_since,
                                len(self._buf) / self._bytes_per_s,
                            )
                        outage_since = None
                        await self._serve(conn)
                except ProviderError as exc:
                    if not exc.retryable:
                        self._fail(exc, started)
                        return
                    why = str(exc).removeprefix(f"{PROVIDER}: ")
                    retry_after = exc.retry_after
                finally:
                    self._conn = None

                if conn is not None:
                    if self._closing:
                        return  # CloseStream answered, or the call ended during a drop
                    if conn.close_code in (1002, 1008):
                        self._fail(
                            ProviderProtocolError(
                                f"Deepgram could not decode the audio (close {conn.close_code} "
                                f"{conn.close_reason or ''}); check encoding/sample_rate",
                                provider=PROVIDER,
                            ),
                            started,
                        )
                        return
                    why = conn.ended_because or _describe_close(conn)
                    self.reconnects += 1
                    if self.reconnects > self._s.max_reconnects:
                        self._fail(
                            ProviderUnavailable(
                                f"Deepgram stream lost ({why}) and the call already used its "
                                f"{self._s.max_reconnects} reconnects",
                                provider=PROVIDER,
                            ),
                            started,
                        )
                        return
                    self._log.warning("Deepgram stream lost (%s); reconnecting", why)
                    outage_since = trio.current_time()
                    if outage_since - conn.opened_at >= _STABLE_S:
                        failures = 0
                        continue  # the first attempt goes at once
                    # A connection that dies at once: back off instead of hammering.
                    failures += 1
                    await trio.sleep(_BACKOFF.delay(failures))
                    continue

                # A connect attempt failed.
                now = trio.current_time()
                if outage_since is None:
                    outage_since = now
                failures += 1
                wait = _BACKOFF.delay(failures, retry_after)
                if self._closing or now + wait - outage_since > self._s.reconnect_timeout_s:
                    what = "reconnect to" if started else "connect to"
                    self._fail(
                        ProviderUnavailable(
                            f"could not {what} Deepgram within "
                            f"{self._s.reconnect_timeout_s:g} s: {why}",
                            provider=PROVIDER,
                        ),
                        started,
                    )
                    return
                self._log.info("Deepgram connect failed (%s); retrying in %.2f s", why, wait)
                await trio.sleep(wait)
        finally:
            self._events_tx.close()
            self._done.set()
            if not started:
                task_status.started()

    def _fail(self, error: ProviderError, started: bool) -> None:
        if started:
            self._log.error("Deepgram stream failed: %s", error)
            self._error = error
        else:
            self._open_error = error

    async def _connect(self, stack: AsyncExitStack, limit_s: float) -> WebSocketClient:
        """Open one WebSocket within `limit_s`; map refusals to the error vocabulary."""
        try:
            ws = await WebSocketClient.connect(
                self._url, self._headers, tls=self._tls, timeout_s=limit_s
            )
        except WebSocketRejected as exc:
            raise self._rejected(exc) from None
        except WebSocketUnreachable as exc:
            raise ProviderUnavailable(
                f"cannot reach {urlsplit(self._url).netloc} ({exc})", provider=PROVIDER
            ) from None
        stack.push_async_callback(ws.aclose)
        return ws

    def _rejected(self, exc: WebSocketRejected) -> ProviderError:
        body = decode_error_body(exc.body)
        status = exc.status_code
        detail = f"HTTP {status} {body.err_code}: {body.err_msg}".rstrip(": ")
        if body.request_id:
            detail += f", request {body.request_id}"
        env = self._s.api_key_env
        return error_for_status(
            status,
            f"Deepgram refused the stream ({detail})",
            provider=PROVIDER,
            retry_after=parse_retry_after(exc.headers.get("Retry-After")),
            auth_hint=f"the API key from ${env} was refused; set {env} to a valid Deepgram key",
            refused_hint="check the [stt.deepgram] settings",
            refused=ProviderProtocolError,
        )

    # ------------------------------------------------------------------ one connection

    async def _serve(self, conn: _Connection) -> None:
        """Run one connection until it closes; record why on `conn`."""
        self._conn = conn
        self._last_sent_at = trio.current_time()
        async with trio.open_nursery() as nursery:
            conn.scope = nursery.cancel_scope
            nursery.start_soon(self._guard, self._send_loop, conn)
            nursery.start_soon(self._guard, self._watchdog, conn)
            try:
                while True:
                    await self._on_message(conn, await conn.ws.receive())
            except WebSocketClosed as exc:
                conn.close_code, conn.close_reason = exc.code, exc.reason
            nursery.cancel_scope.cancel()

    async def _guard(
        self, loop: Callable[[_Connection], Awaitable[None]], conn: _Connection
    ) -> None:
        try:
            await loop(conn)
        except WebSocketClosed:
            pass  # the reader sees the close too and ends the connection
        except _Stalled:
            conn.ended_because = f"a send took longer than {self._s.send_timeout_s:g} s"
            assert conn.scope is not None
            conn.scope.cancel()

    async def _send(self, conn: _Connection, message: str | bytes | None) -> None:
        """Send `message` (None: what `send_now` left queued in the transport)."""
        # The watchdog times sends: a cancel scope per 20 ms frame would cost more CPU
        # than the send itself.
        conn.sending_since = trio.current_time()
        if message is None:
            await conn.ws.flush()
        else:
            await conn.ws.send(message)
        conn.sending_since = None
        self._last_sent_at = trio.current_time()

    def _send_now(self, conn: _Connection) -> bool:
        """Write the next chunk without waiting; True when nothing is left for the
        sender task (it went out whole, or there was nothing to send)."""
        if self._controls or conn.sending_since is not None:
            return False  # controls keep their order in the sender; a send is in flight
        chunk = self._next_chunk(conn)
        if chunk is None:
            return True
        try:
            sent = conn.ws.send_nowait(chunk)
        except WebSocketClosed:
            return False  # the reader sees the close and ends the connection
        if sent:
            self._last_sent_at = trio.current_time()
        return sent

    def _next_chunk(self, conn: _Connection) -> bytes | None:
        """The next audio to send on `conn` (up to the next control message), or None
        while less than a chunk is waiting; counted as sent."""
        end = self._buf_start + len(self._buf)
        limit = min(end, conn.sent_to + self._max_chunk)
        if self._controls:
            limit = min(limit, self._controls[0][0])
        elif limit - conn.sent_to < self._min_chunk:
            return None  # less than a chunk: `send()` wakes the sender once there is one
        if limit <= conn.sent_to:
            return None
        lo = conn.sent_to - self._buf_start
        chunk = bytes(self._buf[lo : lo + limit - conn.sent_to])
        # Counted as sent before the await: a final result for it may arrive while the
        # send is still returning.
        conn.sent_to = limit
        return chunk

    async def _send_loop(self, conn: _Connection) -> None:
        """Send buffered audio in order, each control message after the audio before it."""
        while True:
            self._wake = trio.Event()
            if conn.ws.has_unsent:  # what `send()` wrote only in part
                await self._send(conn, None)
            while True:
                if self._controls and self._controls[0][0] <= conn.sent_to:
                    _, message = self._controls.pop(0)
                    await self._send(conn, message)
                    continue
                chunk = self._next_chunk(conn)
                if chunk is None:
                    break
                await self._send(conn, chunk)
            self._sender_idle = True
            try:
                await self._wake.wait()
            finally:
                self._sender_idle = False

    async def _watchdog(self, conn: _Connection) -> None:
        """KeepAlive whenever nothing was sent for `keepalive_s` (Deepgram idles out at
        10 s); raise _Stalled when one send has been stuck for `send_timeout_s`."""
        keepalive_s, send_timeout_s = self._s.keepalive_s, self._s.send_timeout_s
        while True:
            now = trio.current_time()
            sending_since = conn.sending_since
            due = self._last_sent_at + keepalive_s
            if sending_since is None:
                if now < due:
                    await trio.sleep_until(due)
                    continue
                with trio.move_on_after(send_timeout_s):
                    await conn.ws.send(KEEP_ALIVE)
                    self._last_sent_at = trio.current_time()
                    continue
                raise _Stalled
            # A send is in progress: that is activity; check again when it would be stuck.
            stuck_at = sending_since + send_timeout_s
            if now >= stuck_at:
                raise _Stalled
            await trio.sleep_until(min(stuck_at, max(due, now + keepalive_s)))

    # ------------------------------------------------------------------ server messages

    async def _on_message(self, conn: _Connection, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            self._ignore("a binary frame", raw)
            return
        msg = decode_server_message(raw)
        offset_s = conn.offset / self._bytes_per_s
        if isinstance(msg, ListenResults):
            await self._on_results(conn, msg, offset_s)
        elif isinstance(msg, ListenSpeechStarted):
            at = round(offset_s + msg.timestamp, 3)
            last = self._last_speech_started
            if last is None or at > last + _SPEECH_STARTED_DUP_S:
                self._last_speech_started = at
                await self._emit(SpeechStarted(at=at))
        elif isinstance(msg, ListenUtteranceEnd):
            end = round(offset_s + msg.last_word_end, 3)
            if self._last_utterance_end is None or end > self._last_utterance_end:
                self._last_utterance_end = end
                await self._emit(UtteranceEnd(last_word_end=end))
        elif isinstance(msg, ListenMetadata):
            self._log.debug("Deepgram request %s: %.2f s of audio", msg.request_id, msg.duration)
        else:
            self._ignore(msg, raw)

    async def _on_results(self, conn: _Connection, msg: ListenResults, offset_s: float) -> None:
        window_end = msg.start + msg.duration
        if msg.is_final:
            # Deepgram will not revise audio before a final: no need to replay it.
            self._trim_to(conn.offset + round(window_end * self._bytes_per_s))
            if msg.duration > 0 and offset_s + window_end <= self._final_through + 1e-6:
                return  # already covered by an earlier final (a replay overlap)
            self._final_through = offset_s + window_end
        alt = msg.channel.alternatives[0] if msg.channel.alternatives else Alternative()
        if not alt.transcript and not (msg.is_final and msg.speech_final):
            return  # empty results carry nothing for the engine, except an endpoint
        if alt.words:
            start, end = alt.words[0].start, alt.words[-1].end
        else:
            start, end = msg.start, window_end
        await self._emit(
            Transcript(
                text=alt.transcript,
                is_final=msg.is_final,
                speech_final=msg.speech_final,
                start=round(offset_s + start, 3),
                end=round(offset_s + end, 3),
                confidence=alt.confidence,
            )
        )

    def _ignore(self, why: str, raw: str | bytes) -> None:
        self.ignored_messages += 1
        if self.ignored_messages <= _LOGGED_IGNORED:
            self._log.warning("ignored %s from Deepgram: %.120r", why, raw)

    async def _emit(self, event: STTEvent) -> None:
        if self._closing:
            # The engine may have stopped reading: never block the close on it.
            try:
                self._events_tx.send_nowait(event)
            except (trio.WouldBlock, trio.BrokenResourceError):
                pass
            return
        try:
            await self._events_tx.send(event)
        except trio.BrokenResourceError:
            pass  # nobody iterates any more

    # ------------------------------------------------------------------ closing

    async def _close(self) -> None:
        """CloseStream after the remaining audio; wait briefly for the last results."""
        self._closing = True
        if not self._done.is_set() and self._conn is not None:
            self._queue_control(CLOSE_STREAM)
            with trio.move_on_after(self._s.close_timeout_s):
                await self._done.wait()

"""The streaming half: one Deepgram `/v1/speak` WebSocket at a time per call, opened
early, kept under the flush limit, replaced when that limit is reached, and reconnected
when it drops.

Bookkeeping is a queue of *segments*: the text spoken between two `flush()` calls.

    sent  : Flush went out, `Flushed` not back yet (oldest first; answered in order)
    held  : flush() was called but its Flush waits (one already in flight, or the rate
            budget is spent); later flushes merge into it, so one Flush answers them all
    open  : text spoken since the last flush()

The rule that keeps `Flushed` honest: the server only gets the text of a segment once
every earlier segment's Flush is out, so Deepgram never folds later text into an earlier
flush's audio. Every change updates this state first and then "pumps" whatever the server
lacks; on a reconnect the unanswered segments are simply marked unsent again and pumped
to the new socket, which re-speaks exactly the text whose audio was not confirmed.

The flush limit (20 per 60 s) is per socket, so each socket has its own `FlushBudget`.
When it is spent and a flush is held, the stream does not wait for the minute to free a
slot (seconds of silence in a chatty call): once the old socket has answered every Flush
it was sent (nothing of it in flight, so nothing lost or spoken twice), a new socket
opens, becomes the current one, and the held text is pumped to it like after a drop; the
old one gets `Close` (it owes nothing; its buffered, unflushed text is dropped). The
server's flush-limit `Warning` leads to the same move. If no new socket opens, the stream
stays on the old one and waits for its budget, as before.

The new socket's handshake (TCP + TLS + upgrade, ~50-150 ms to Deepgram) would be silence
before the held sentence, so it is opened ahead, in the background: once a flush leaves
the current socket at most `_SPARE_RESERVE` flushes in its window, a *spare* opens. It
hears nothing until it becomes current: a rotation (or a reconnect after a drop) takes
it, or waits for it if its handshake is under way, and only connects when there is none.
At most one spare; a call that never nears the limit never opens one. A spare that fails
to open, or that the server closes, is forgotten with a log line (the rotation then
connects as before). `/v1/speak` has no KeepAlive message, so a spare is kept alive by
opening it late, a couple of sentences before it is needed, not by traffic. `aclose()`
and a failed stream close it.

The socket is hookline's lean `WebSocketClient`: the task that owns a connection is also
its reader (no background reader task, no channel hop per received message).
"""

from __future__ import annotations

import logging
import math
import ssl
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import msgspec
import trio

from hookline import (
    AudioChunk,
    AudioFormat,
    Backoff,
    CallInfo,
    CallLog,
    Flushed,
    ProviderError,
    ProviderUnavailable,
    TTSEvent,
    WebSocketClient,
    WebSocketClosed,
    WebSocketRejected,
    WebSocketUnreachable,
    leaves,
    parse_retry_after,
    reraise_single,
    retry,
)

from . import wire
from .budget import FlushBudget
from .errors import PROVIDER, rejected_error
from .settings import DeepgramTTSSettings
from .wire import speak_url, split_text

__all__ = ["DeepgramTTSStream", "open_stream"]

log = logging.getLogger("hookline.tts.deepgram")

_FLUSH = wire.encode(wire.Flush())
_CLEAR = wire.encode(wire.Clear())
_CLOSE = wire.encode(wire.Close())
_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# A spare socket opens once a socket has at most this many flushes left in its window. A
# flush goes out per sentence at most, and the rotation also waits for the last one's
# audio: two sentences (seconds of speech) cover a ~100 ms handshake with a wide margin,
# even for merged flushes, yet the spare is needed soon after it opens (it is idle till
# then). At 1 the spare would have only the last sentence's synthesis time to open in.
_SPARE_RESERVE = 2


class _Dropped(Exception):
    """The socket broke while sending; the caller forgets it and reconnects."""


@dataclass
class _Segment:
    texts: list[str] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)  # the flush() numbers it answers
    spoken: int = 0  # how many of `texts` the current socket has received

    def absorb(self, later: _Segment) -> None:
        # The engine speaks sentences without the space between them; merged into one
        # synthesis they need it back ("Sure.What" would be read as one word).
        if (
            self.texts
            and later.texts
            and later.spoken == 0
            and not self.texts[-1][-1:].isspace()
            and not later.texts[0][:1].isspace()
        ):
            later.texts[0] = " " + later.texts[0]
        # `later`'s text only goes out once our Flush has, so its spoken prefix only
        # counts when all of ours is out.
        if self.spoken == len(self.texts):
            self.spoken += later.spoken
        self.texts += later.texts
        self.seqs += later.seqs


class DeepgramTTSStream:
    """A `TTSStream`: speak/flush/clear in, AudioChunk and Flushed out (`async for`)."""

    def __init__(
        self,
        settings: DeepgramTTSSettings,
        api_key: str,
        fmt: AudioFormat,
        call: CallInfo,
        nursery: trio.Nursery,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._settings = settings
        self._tls = tls
        self._api_key = api_key
        self._url = speak_url(settings, fmt)
        self._nursery = nursery
        self.log = CallLog(log, {"call_id": call.call_id})
        self._ws: WebSocketClient | None = None
        self._spare: WebSocketClient | None = None  # open, not yet current (see above)
        self._spare_opening: trio.Event | None = None  # set when that attempt ends
        self._wire = trio.Lock()  # one task at a time talks to the socket
        self._sent: deque[_Segment] = deque()
        self._held: _Segment | None = None
        self._open = _Segment()
        self._flushes = 0  # flush() calls so far: the sequence numbers
        self._epoch = 0  # bumped by clear(): queued events of older epochs are dropped
        self._awaiting_cleared = 0  # Clear sent, Cleared not back: incoming audio is stale
        self._budget = FlushBudget(settings.flush_budget, settings.flush_window_s)  # per socket
        self._socket_answers = 0  # Flushed received on the current socket
        self._no_rotation_until = -math.inf  # until then this socket waits for its budget
        self._kick = trio.Event()
        self._failed: ProviderError | None = None
        self._closing = False
        self._rewarm = False  # the server closed an idle socket: re-open it to stay warm
        self.connections = 0
        self.request_id = ""
        events_in, events_out = trio.open_memory_channel[tuple[int, TTSEvent | ProviderError]](
            math.inf
        )
        self._events_in = events_in
        self._events_out = events_out

    # ------------------------------------------------------------------ TTSStream

    async def speak(self, text: str) -> None:
        """Queue text; it is synthesized at the next flush()."""
        self._check()
        if not text:
            return
        self._open.texts.extend(split_text(text))
        if self._held is None:
            await self._pump()

    async def flush(self) -> None:
        """Ask for the audio of everything spoken; answered by Flushed(n) after it."""
        self._check()
        self._flushes += 1
        seq = self._flushes
        segment = self._open
        if not segment.texts:
            # Nothing new to synthesize: answered together with the last flush with text.
            if self._held is not None:
                self._held.seqs.append(seq)
            elif self._sent:
                self._sent[-1].seqs.append(seq)
            else:
                self._emit(Flushed(seq))
            return
        segment.seqs.append(seq)
        self._open = _Segment()
        if self._held is None:
            self._held = segment
        else:
            self._held.absorb(segment)
        await self._pump()

    async def clear(self) -> None:
        """Drop all spoken text and audio not yet yielded; unanswered flushes never are."""
        self._epoch += 1
        self._sent.clear()
        self._held = None
        self._open = _Segment()
        ws = self._ws
        if ws is None or self._failed is not None:
            return
        self._awaiting_cleared += 1
        async with self._wire:
            if ws is not self._ws:
                return  # that socket is gone, and the old audio with it
            try:
                await self._send(ws, _CLEAR)
            except _Dropped:
                self._drop(ws)

    def __aiter__(self) -> AsyncIterator[TTSEvent]:
        return self

    async def __anext__(self) -> TTSEvent:
        while True:
            try:
                epoch, item = await self._events_out.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                raise StopAsyncIteration from None
            if isinstance(item, ProviderError):
                raise item
            if epoch == self._epoch:
                return item

    # ------------------------------------------------------------------ internals

    def _check(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self._closing:
            raise ProviderError("the TTS stream is closed", provider=PROVIDER)

    def _emit(self, event: TTSEvent | ProviderError) -> None:
        try:
            self._events_in.send_nowait((self._epoch, event))
        except trio.ClosedResourceError:
            pass

    def _fail(self, error: ProviderError) -> None:
        if self._failed is None:
            self._failed = error
            self.log.error("TTS stream failed: %s", error)
            self._emit(error)
            if self._spare is not None:
                self._nursery.start_soon(_close_politely, self._spare)
                self._spare = None

    async def _send(self, ws: WebSocketClient, message: str) -> None:
        # Shielded: a barge-in that cancels the caller must not cut a frame in half.
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + self._settings.send_timeout_s
            try:
                await ws.send(message)
            except (WebSocketClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                raise _Dropped from None
        # The reader may have seen this socket die meanwhile and reset the bookkeeping:
        # whatever the caller meant to record next belongs to no live socket.
        if scope.cancelled_caught or ws is not self._ws:
            raise _Dropped

    def _drop(self, ws: WebSocketClient) -> None:
        """Forget a broken socket: everything unanswered becomes unsent again."""
        if ws is self._spare:
            self._spare = None
            self._nursery.start_soon(_close_quietly, ws)
            return
        if ws is not self._ws:
            return
        self._ws = None
        self._awaiting_cleared = 0
        merged: _Segment | None = None
        for segment in [*self._sent, *([self._held] if self._held else [])]:
            segment.spoken = 0
            if merged is None:
                merged = segment
            else:
                merged.absorb(segment)
        self._sent.clear()
        self._held = merged
        self._open.spoken = 0
        self._nursery.start_soon(_close_quietly, ws)

    def _has_work(self) -> bool:
        return self._held is not None or self._open.spoken < len(self._open.texts)

    async def _pump(self, *, warm: bool = False) -> None:
        """Send the server whatever it lacks, reconnecting when the socket is gone.

        warm: also re-open a socket the server closed while nothing was owed, so the
        next sentence pays no handshake (a failure then only leaves the stream cold).
        """
        async with self._wire:
            drops = 0
            while True:
                if self._failed is not None:
                    raise self._failed
                idle = not self._has_work()
                if self._closing or (idle and not (warm and self._rewarm and self._ws is None)):
                    return
                ws = self._ws
                if ws is None:
                    try:
                        ws = await self._next_socket()
                    except ProviderError as e:
                        if idle:
                            self._rewarm = False
                            self.log.warning("could not re-open the idle TTS socket: %s", e)
                            return
                        self._fail(e)
                        raise
                    self.log.info(
                        "reconnected (%s)", "warm" if idle else "re-speaking unanswered text"
                    )
                if idle:
                    return
                try:
                    await self._push(ws)
                except _Dropped:
                    self.log.warning("TTS socket dropped while sending")
                    self._drop(ws)
                    drops += 1
                    if drops > self._settings.reconnect_attempts:
                        error = ProviderUnavailable(
                            f"the connection to {self._settings.url} keeps dropping",
                            provider=PROVIDER,
                        )
                        self._fail(error)
                        raise error from None
                    continue
                if not (self._rotation_due() and await self._rotate(ws)):
                    return
                # On a new socket now: the next round pumps the held text to it.

    async def _push(self, ws: WebSocketClient) -> None:
        epoch = self._epoch
        held = self._held
        if held is not None:
            while held.spoken < len(held.texts):
                text = held.texts[held.spoken]
                held.spoken += 1
                await self._send(ws, wire.encode(wire.Speak(text)))
                if epoch != self._epoch or self._held is not held:
                    return
            now = trio.current_time()
            if len(self._sent) >= self._settings.max_flushes_in_flight:
                return  # sent when the Flushed in flight comes back
            if not self._budget.available(now):
                # _pump moves to a new socket when it may; if not, the pump loop sleeps
                # until an answer comes back or the budget frees.
                self._kick.set()
                return
            # Moved before the await: the answer may arrive before send() returns.
            self._budget.record(now)
            self._open_spare_if_near_the_limit(now)
            self._sent.append(held)
            self._held = None
            await self._send(ws, _FLUSH)
            if epoch != self._epoch:
                return
        segment = self._open
        while segment.spoken < len(segment.texts) and self._held is None:
            text = segment.texts[segment.spoken]
            segment.spoken += 1
            await self._send(ws, wire.encode(wire.Speak(text)))
            if epoch != self._epoch:
                return

    async def pump_loop(self) -> None:
        """Sends held flushes once an answer or the rate budget frees a slot, and
        reconnects a dropped socket that still owes audio."""
        while True:
            now = trio.current_time()
            slot_free = len(self._sent) < self._settings.max_flushes_in_flight
            reopen = self._has_work() or self._rewarm
            if self._closing:
                return
            if (
                (self._ws is None and reopen)
                or (self._held is not None and slot_free and self._budget.available(now))
                or self._rotation_due()
            ):
                try:
                    await self._pump(warm=True)
                except ProviderError:
                    return  # _pump reported it through the events
                continue
            wake_at = math.inf
            if self._held is not None and slot_free:
                wake_at = self._budget.free_at(now)
            with trio.move_on_at(wake_at):
                await self._kick.wait()
            self._kick = trio.Event()

    def _rotation_due(self) -> bool:
        """A flush is held by this socket's spent budget, and this socket owes no answer
        (so its audio is complete): time to go on on a new socket."""
        now = trio.current_time()
        return (
            self._ws is not None
            and self._held is not None
            and not self._sent
            and not self._budget.available(now)
            and now >= self._no_rotation_until
        )

    async def _rotate(self, old: WebSocketClient) -> bool:
        """Make a new socket the current one and close `old`; False if none opens (the
        stream then stays on `old` and waits for its budget). Called with the wire lock."""
        try:
            await self._next_socket()
        except ProviderError as e:
            self._no_rotation_until = self._budget.free_at(trio.current_time())
            self.log.warning(
                "flush limit reached and no new TTS socket opens (%s): waiting for a slot", e
            )
            return False
        self.log.info("flush limit reached on this TTS socket: continuing on a new one")
        self._nursery.start_soon(_close_politely, old)
        return True

    def _make_current(self, ws: WebSocketClient) -> None:
        """A socket that has heard nothing becomes the one we talk to. It has its own
        flush limit: every held or open text is unsent to it (nothing is in flight: a
        drop or a rotation saw to that), and no Cleared is owed on it."""
        self._ws = ws
        self._budget = FlushBudget(self._settings.flush_budget, self._settings.flush_window_s)
        self._socket_answers = 0
        self._no_rotation_until = -math.inf
        self._awaiting_cleared = 0
        if self._held is not None:
            self._held.spoken = 0
        self._open.spoken = 0
        self._rewarm = False
        self.connections += 1

    async def _next_socket(self) -> WebSocketClient:
        """The spare made current, waited for if its handshake is under way (it is
        part-way there); a new connection when there is none. Called with the wire lock."""
        if self._spare_opening is not None:
            await self._spare_opening.wait()
        ws, self._spare = self._spare, None
        if ws is None:
            return await self._connect_with_retry()
        self._make_current(ws)
        self.log.debug("the spare TTS socket is the current one now")
        return ws

    def _open_spare_if_near_the_limit(self, now: float) -> None:
        if (
            self._spare is None
            and self._spare_opening is None
            and self._budget.remaining(now) <= _SPARE_RESERVE
        ):
            self._spare_opening = trio.Event()
            self._nursery.start_soon(self._run_spare, self._spare_opening)

    async def _run_spare(self, opening: trio.Event) -> None:
        """Opens the spare (one attempt: failing only costs the rotation a handshake),
        then is its reader, like `_run_connection`, through its becoming current."""
        try:
            ws = await self._open_socket()
        except Exception as e:
            self.log.warning(
                "could not open a spare TTS socket (%s): the next one connects when needed",
                self._connect_error(e),
            )
            return
        else:
            if self._closing or self._failed is not None:
                await _close_politely(ws)  # aclose() or _fail() ran during the handshake
                return
            self._spare = ws
        finally:
            self._spare_opening = None
            opening.set()
        await self._serve(ws)

    async def _open_socket(self) -> WebSocketClient:
        return await WebSocketClient.connect(
            self._url,
            [("Authorization", f"Token {self._api_key}")],
            tls=self._tls,
            timeout_s=self._settings.connect_timeout_s,
            max_message_bytes=_MAX_MESSAGE_BYTES,
        )

    async def _connect(self) -> WebSocketClient:
        return await self._nursery.start(self._run_connection)

    async def _run_connection(
        self, task_status: trio.TaskStatus[WebSocketClient] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Owns one socket: connects, then is its reader until it closes (the client
        has no reader task of its own: this task's receive() does the reading)."""
        try:
            ws = await self._open_socket()
        except Exception as e:
            raise self._connect_error(e) from None
        self._make_current(ws)  # before started(): the reader must see itself as current
        task_status.started(ws)
        await self._serve(ws)

    async def _serve(self, ws: WebSocketClient) -> None:
        opened = trio.current_time()
        try:
            await self._read(ws, opened)
        except Exception as e:
            self.log.warning("TTS socket failed: %r", e)
            self._drop(ws)
            self._kick.set()

    def _connect_error(self, error: Exception) -> Exception:
        found = list(leaves(error))
        for leaf in found:
            if isinstance(leaf, WebSocketRejected):
                return rejected_error(
                    leaf.status_code,
                    leaf.body,
                    self._settings.api_key_env,
                    parse_retry_after(leaf.headers.get("Retry-After")),
                )
        for leaf in found:
            if isinstance(leaf, WebSocketUnreachable):
                # Its text says why: "no answer within N s", a refused connect, a bad
                # certificate, an upgrade that was not one.
                return ProviderUnavailable(
                    f"cannot connect to {self._settings.url}: {leaf}", provider=PROVIDER
                )
        return error

    async def _connect_with_retry(self) -> WebSocketClient:
        s = self._settings
        backoff = Backoff(
            first_s=s.retry_base_s, max_s=s.retry_max_s, attempts=max(1, s.reconnect_attempts)
        )
        return await retry(self._connect, backoff, what="connecting", log=self.log)

    async def connect(self) -> None:
        """Open the socket now (warm), so the first sentence pays no handshake."""
        async with self._wire:
            if self._ws is None:
                await self._connect_with_retry()

    async def _read(self, ws: WebSocketClient, opened: float) -> None:
        try:
            while True:
                message = await ws.receive()
                if ws is not self._ws:
                    if ws is self._spare:
                        continue  # its Metadata: nothing is asked of a spare yet
                    return
                if isinstance(message, bytes):
                    if message and not self._awaiting_cleared:
                        self._emit(AudioChunk(message))
                    continue
                self._handle(message)
        except WebSocketClosed as e:
            if ws is self._spare and not self._closing:
                self.log.info("the spare TTS socket was closed by the server (code %s)", e.code)
                self._drop(ws)
                return
            if self._closing or ws is not self._ws:
                return
            self.log.warning("TTS socket closed by the server (code %s %s)", e.code, e.reason)
            self._drop(ws)
            # Re-open at once: now if audio is owed, else to stay warm, unless the socket
            # died young (a server that closes at once must not make us spin).
            lived = trio.current_time() - opened
            self._rewarm = lived >= self._settings.rewarm_min_lifetime_s
            self._kick.set()

    def _handle(self, text: str) -> None:
        try:
            message = wire.decode_server(text)
        except msgspec.DecodeError as e:
            self.log.warning("ignored an unexpected message from Deepgram (%s): %.200s", e, text)
            return
        match message:
            case wire.Flushed():
                if self._awaiting_cleared:
                    return  # a flush the Clear already cancelled
                if not self._sent:
                    self.log.warning("ignored a Flushed that answers no flush: %.200s", text)
                    return
                segment = self._sent.popleft()
                self._socket_answers += 1
                for seq in segment.seqs:
                    self._emit(Flushed(seq))
                self._kick.set()
            case wire.Cleared():
                self._awaiting_cleared = max(0, self._awaiting_cleared - 1)
            case wire.Metadata(request_id=request_id, model_name=model):
                self.request_id = request_id
                self.log.debug("Deepgram TTS session %s, model %s", request_id, model)
            case wire.ServerWarning(description=description, code=code):
                self.log.warning("Deepgram warning %s: %s", code, description)
                if "flush" in f"{code} {description}".lower():
                    self._flush_refused()

    def _flush_refused(self) -> None:
        """Deepgram ignored our last Flush (rate limit); its text stays buffered there.

        Our budget should make this impossible; if the server counts differently, the
        refused flush goes back to being held, merged with anything held, and this
        socket's budget counts as spent: the stream moves to a new socket once this one
        has answered the rest, instead of waiting forever for a Flushed that will not
        come. A socket that has answered no flush yet is waited out instead (a server
        counting per key would make every new socket refuse too).
        """
        if self._awaiting_cleared or not self._sent:
            return
        refused = self._sent.pop()
        if self._held is not None:
            refused.absorb(self._held)
        self._held = refused
        now = trio.current_time()
        self._budget.exhaust(now)
        if not self._socket_answers:
            self._no_rotation_until = self._budget.free_at(now)
        self._kick.set()

    async def aclose(self) -> None:
        self._closing = True
        sockets = [ws for ws in (self._ws, self._spare) if ws is not None]
        self._ws = self._spare = None
        with trio.CancelScope(shield=True):
            for ws in sockets:
                await _close_politely(ws)
        self._events_in.close()


async def _close_politely(ws: WebSocketClient) -> None:
    """Close a socket that owes nothing: `Close` drops its unflushed text at once."""
    with trio.move_on_after(1.0):
        try:
            await ws.send(_CLOSE)
        except (WebSocketClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        await ws.aclose()


async def _close_quietly(ws: WebSocketClient) -> None:
    with trio.move_on_after(1.0):
        await ws.aclose()


@asynccontextmanager
async def open_stream(
    settings: DeepgramTTSSettings,
    api_key: str,
    fmt: AudioFormat,
    call: CallInfo,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[DeepgramTTSStream]:
    """`tls`: the provider's shared context for a `wss://` URL (None for `ws://`)."""
    try:
        async with trio.open_nursery() as nursery:
            stream = DeepgramTTSStream(settings, api_key, fmt, call, nursery, tls)
            await stream.connect()
            nursery.start_soon(stream.pump_loop)
            try:
                yield stream
            finally:
                await stream.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The background tasks report through the stream, never by raising: a group
        # holds one error from connect() or the caller's block. Give it back unwrapped.
        reraise_single(group)

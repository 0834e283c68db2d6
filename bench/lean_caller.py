"""A lean simulated Twilio caller for bench_server.py: the same wire traffic as
`hookline_testkit.twilio_sim.SimCall`, at a fraction of the load generator's CPU.

Why: with one `SimCall` per call (a trio-websocket connection with its own reader task
and memory channel, a frame task waking every 20 ms, wsproto with pure-Python masking),
the load generator's core saturates before the server's at ~100 calls. Here:

- The webhook and the upgrade signature are `TwilioSimulator.post_webhook` and
  `TwilioSimulator.sign`, as `TwilioSimulator.call` does them (once per call).
- The media WebSocket is `websockets`' sans-I/O `ClientProtocol` (masking in C via
  `websockets.speedups`) on a plain non-blocking socket: writes are `socket.send` from
  whichever task has something to say; a partial write keeps the rest in the call's
  backlog, which its writer task sends once the socket is writable.
- One `Ticker` task sends every call's due media frame: SLOTS phases 1 ms apart on an
  absolute grid, each call in the phase it started in, so calls are spread over the
  20 ms like independent Twilio calls (not one burst of every call per 20 ms).
- Frames are a bytes template (same JSON, same key order as twilio_sim's msgspec
  structs) with the base64 payload cached per distinct frame (0xFF silence, the tone).
- Per call, one reader task (`hookline.SocketIO`: the syscall first, the event loop
  only when there is nothing to read) decodes the
  server's messages with msgspec structs holding only the fields used, and one mark
  task echoes each mark once the audio before it has played (at max(now, play end);
  a `clear` makes every pending mark due at once), as Twilio does.

Measured (100 calls, 3 turns, a shared 2-core box, load generator CPU per caller media
frame): syscall-first reads 0.107 ms (twice) against trio's `socket.recv` 0.115 and
0.184 ms; the whole load generator with SimCall callers ~0.18 ms. The ticker writes with
`SocketIO.write_nowait`, so it never waits on a call's socket; what a full socket did not
take is sent by that call's writer task.

What a call measures (`converse`, also run on `SimCall` for `--callers sim`): greeting
time (first agent audio after `start`), per turn ~1 s of tone then the answer time
(first audio received after the tone was sent), then "quiet" (audio played out, marks
echoed, 0.3 s without new audio, `SimCall.wait_until_quiet`'s rule); at the end `stop`
and the WebSocket close.

With `barge_in`, the last turn is interrupted: ~0.3 s into the agent's answer the
caller speaks again (the same tone); the server must answer with `clear` within
BARGE_IN_CLEAR_S or the barge-in counts as lost; the answer to the interruption is
timed like any answer. Marks: what is measurable from the caller's side is marks
received and marks echoed; a mark still pending when the stream closed is a loss only
if the call did not end as scripted (a call that ended normally has no pending marks:
each step waits for them). A mark the server meant to send but never did cannot be
seen from here: the server's own records would have to say so.
"""

from __future__ import annotations

import base64
import functools
import math
import random
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidState, InvalidStatus
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from hookline import SocketIO
from hookline.audio import FRAME_BYTES, FRAME_SECONDS, SAMPLE_RATE
from hookline_testkit.twilio_sim import (
    SIGNATURE_HEADER,
    AppClear,
    AppMark,
    SimulatorError,
    TwilioSimulator,
    WebhookRefused,
    new_sid,
)

__all__ = [
    "BARGE_IN_AFTER_S",
    "BARGE_IN_CLEAR_S",
    "CallOutcome",
    "LeanCall",
    "Ticker",
    "converse",
    "lean_call",
    "one_call",
]

SLOTS = 20  # phases of the 20 ms frame grid, 1 ms apart
SLOT_S = FRAME_SECONDS / SLOTS
QUIET_S = 0.3  # SimCall.wait_until_quiet's default
BARGE_IN_AFTER_S = 0.3  # into the agent's answer
BARGE_IN_CLEAR_S = 2.0  # a barge-in with no clear within this is lost
CLOSE_WAIT_S = 2.0  # for the server's close reply, as twilio_sim's disconnect_timeout
RECV_BYTES = 65536
MAX_MESSAGE = 4 * 1024 * 1024

# The messages as twilio_sim's msgspec structs encode them (same keys, same order).
_MEDIA = (
    b'{"event":"media","sequenceNumber":"%d","streamSid":"%s","media":'
    b'{"track":"inbound","chunk":"%d","timestamp":"%d","payload":"%s"}}'
)
_MARK = b'{"event":"mark","sequenceNumber":"%d","streamSid":"%s","mark":{"name":%s}}'
_STOP = (
    b'{"event":"stop","sequenceNumber":"%d","streamSid":"%s",'
    b'"stop":{"accountSid":"%s","callSid":"%s"}}'
)
_CONNECTED = b'{"event":"connected","protocol":"Call","version":"1.0.0"}'
_SILENCE = base64.b64encode(b"\xff" * FRAME_BYTES)


@functools.lru_cache(maxsize=32)
def _payloads(audio: bytes) -> tuple[bytes, ...]:
    """`audio` as base64 payloads of 20 ms frames (the last padded with 0xFF silence)."""
    return tuple(
        base64.b64encode(audio[i : i + FRAME_BYTES].ljust(FRAME_BYTES, b"\xff"))
        for i in range(0, len(audio), FRAME_BYTES)
    )


# The server's messages as the testkit decodes them, except media: its payload stays
# base64 text (only its length is needed; decoding every frame would cost this core).
class _Payload(msgspec.Struct):
    payload: str


class _Media(msgspec.Struct, tag_field="event", tag="media"):
    streamSid: str
    media: _Payload


_decode = msgspec.json.Decoder(_Media | AppMark | AppClear).decode
_encode = msgspec.json.Encoder().encode


def _audio_bytes(payload: str) -> int:
    """Decoded length of a base64 payload, without decoding it."""
    pad = 2 if payload.endswith("==") else 1 if payload.endswith("=") else 0
    return len(payload) // 4 * 3 - pad


class Ticker:
    """Sends the due media frame of every lean call: one task for all of them.

    Each call joins the phase (of SLOTS, 1 ms apart) that comes next when it starts and
    gets one frame per 20 ms on an absolute grid: if this process lags, the late frames
    go out at once, as SimCall's absolute grid does."""

    def __init__(self) -> None:
        self._slots: list[list[LeanCall]] = [[] for _ in range(SLOTS)]
        self._t0: float | None = None

    def join(self, call: LeanCall) -> None:
        if self._t0 is None:
            raise RuntimeError("the ticker is not running")
        slot = (math.floor((trio.current_time() - self._t0) / SLOT_S) + 1) % SLOTS
        call._slot = slot
        self._slots[slot].append(call)

    def leave(self, call: LeanCall) -> None:
        if call._slot is not None:
            self._slots[call._slot].remove(call)
            call._slot = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._t0 = trio.current_time()
        task_status.started()
        tick = 0
        while True:
            tick += 1
            await trio.sleep_until(self._t0 + tick * SLOT_S)
            due = self._slots[tick % SLOTS]
            if due:
                for call in tuple(due):
                    call._send_frame()


class LeanCall:
    """One caller's media stream. Open with `lean_call`; the same waits as SimCall."""

    def __init__(
        self,
        raw: socket.socket,
        protocol: ClientProtocol,
        *,
        ticker: Ticker,
        account_sid: str,
        call_sid: str,
        stream_sid: str,
    ) -> None:
        self._io = SocketIO(raw)
        self._protocol = protocol
        self._ticker = ticker
        self.account_sid = account_sid
        self.call_sid = call_sid
        self.stream_sid = stream_sid
        self._sid = stream_sid.encode()
        self.started_at: float | None = None  # when `start` was sent
        self.first_audio_at: float | None = None
        self.last_audio_at: float | None = None
        self.agent_bytes = 0  # agent audio received (mu-law bytes, 8000 a second)
        self.marks_received: list[str] = []
        self.marks_echoed: list[tuple[float, str]] = []
        self.marks_pending_at_close = 0
        self.clears: list[float] = []
        self.invalid_messages = 0  # undecodable, or for another streamSid
        self.frames_sent = 0
        self.close_code: int | None = None
        self.closed = trio.Event()
        self.stopped = False  # `stop` sent (or the stream is gone): no more frames
        self.ended_by_rest: str | None = None
        self._slot: int | None = None  # the ticker's phase
        self._seq = 0
        self._chunk = 0
        self._speech: tuple[bytes, ...] = ()  # payloads of what the caller is saying
        self._spoken = 0
        self._drained = trio.Event()
        self._drained.set()
        self._play_end = 0.0
        self._pending_marks: list[tuple[float, str]] = []
        self._marks_due = trio.Event()
        self._changed: trio.Event | None = None  # the script waits for a message
        self._backlog = b""  # written when the socket is writable again
        self._writable = trio.Event()

    # ------------------------------------------------------------------ what the script does

    async def say(self, audio: bytes) -> None:
        """Speak `audio` (mu-law) in the call's 20 ms frames; returns once it was sent."""
        if self.stopped:
            return
        self._speech, self._spoken = _payloads(audio), 0
        self._drained = trio.Event()
        await self._drained.wait()

    async def wait_for_audio(self, *, after: float | None = None) -> float:
        """Wait for agent audio received after `after` (default: any); returns its time."""
        while True:
            if self.last_audio_at is not None and (after is None or self.last_audio_at > after):
                return self.last_audio_at
            if self.closed.is_set():
                raise SimulatorError("the stream closed before any agent audio")
            await self._wait_change()

    async def wait_until_quiet(self, quiet: float = QUIET_S) -> None:
        """Until the agent's audio has played (its marks echoed) and nothing new came for
        `quiet` seconds (SimCall.wait_until_quiet's rule)."""
        while not self.closed.is_set():
            now = trio.current_time()
            due = max(self._play_end, (self.last_audio_at or now) + quiet)
            if now < due:
                await trio.sleep_until(due)
            elif self._pending_marks:
                await self._wait_change()
            else:
                return

    async def wait_for_clear(self, *, after: float) -> float:
        """Wait for a `clear` received after `after`; returns its time."""
        while True:
            for t in self.clears:
                if t > after:
                    return t
            if self.closed.is_set():
                raise SimulatorError("the stream closed without a clear")
            await self._wait_change()

    async def hangup(self) -> None:
        """`stop`, the close frame, then wait (briefly) for the server to close."""
        self._stop_and_close()
        with trio.move_on_after(CLOSE_WAIT_S):
            await self.closed.wait()

    def end_by_rest(self, how: str) -> None:
        """Called by the REST fake: the call was completed or redirected; Twilio stops
        the stream."""
        self.ended_by_rest = how
        self._stop_and_close()

    # ------------------------------------------------------------------ internals

    async def _wait_change(self) -> None:
        self._changed = changed = trio.Event()
        await changed.wait()

    def _poke(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _send_text(self, data: bytes) -> None:
        try:
            self._protocol.send_text(data)
        except InvalidState:
            return  # closing: nothing more goes out
        self._write()

    def _write(self) -> None:
        """Write what the protocol queued now; a full socket leaves it to the writer task."""
        data = b"".join(self._protocol.data_to_send())
        if not data:
            return
        if self._backlog:
            self._backlog += data
            return
        try:
            sent = self._io.write_nowait(data)
        except OSError:
            self._lost()
            return
        if sent < len(data):
            self._backlog = data[sent:]
            self._writable.set()

    def _send_frame(self) -> None:
        """The ticker's call: this call's next 20 ms frame."""
        speech = self._speech
        if self._spoken < len(speech):
            payload = speech[self._spoken]
            self._spoken += 1
        else:
            payload = _SILENCE
        self._chunk += 1
        chunk = self._chunk
        self._send_text(_MEDIA % (self._next_seq(), self._sid, chunk, (chunk - 1) * 20, payload))
        self.frames_sent += 1
        if speech and self._spoken == len(speech):
            self._speech, self._spoken = (), 0
            self._drained.set()

    def _stop_and_close(self) -> None:
        if self.stopped or self.closed.is_set():
            return
        self._halt()
        self._send_text(
            _STOP % (self._next_seq(), self._sid, self.account_sid.encode(), self.call_sid.encode())
        )
        try:
            self._protocol.send_close(1000)
        except InvalidState:
            return
        self._write()

    def _halt(self) -> None:
        self.stopped = True
        self._ticker.leave(self)
        self._drained.set()

    def _lost(self) -> None:
        if self.closed.is_set():
            return
        self._halt()
        close = self._protocol.close_rcvd
        self.close_code = close.code if close is not None else 1006
        self.marks_pending_at_close = len(self._pending_marks)
        self.closed.set()
        self._marks_due.set()
        self._poke()

    def _on_message(self, data: bytes) -> None:
        now = trio.current_time()
        try:
            msg = _decode(data)
        except msgspec.DecodeError:
            self.invalid_messages += 1
            return
        if msg.streamSid != self.stream_sid:
            self.invalid_messages += 1
            return
        if type(msg) is _Media:
            n = _audio_bytes(msg.media.payload)
            if self.first_audio_at is None:
                self.first_audio_at = now
            self.last_audio_at = now
            self.agent_bytes += n
            self._play_end = max(now, self._play_end) + n / SAMPLE_RATE
        elif type(msg) is AppMark:
            self.marks_received.append(msg.mark.name)
            self._pending_marks.append((max(now, self._play_end), msg.mark.name))
            self._marks_due.set()
        else:
            self.clears.append(now)
            self._play_end = now
            # Cleared audio never plays: every pending mark is due now.
            self._pending_marks = [(now, name) for _, name in self._pending_marks]
            self._marks_due.set()
        self._poke()

    async def _read(self) -> None:
        io, protocol = self._io, self._protocol
        try:
            while True:
                try:
                    data = await io.receive(RECV_BYTES)
                except OSError:
                    data = b""  # a reset is a drop, like an EOF
                if data:
                    protocol.receive_data(data)
                else:
                    protocol.receive_eof()
                for frame in protocol.events_received():
                    if frame.opcode is Opcode.TEXT:  # Twilio's media stream is text only
                        self._on_message(frame.data)
                if protocol.writes:
                    self._write()  # pongs, the reply to a close frame
                if not data or protocol.state is State.CLOSED:
                    return
        finally:
            self._lost()

    async def _drain_backlog(self) -> None:
        while True:
            await self._writable.wait()
            self._writable = trio.Event()
            while self._backlog:
                data = self._backlog  # `_write` may add to it while this one goes out
                try:
                    await self._io.send_all(data)
                except OSError:
                    self._lost()
                    return
                self._backlog = self._backlog[len(data) :]

    async def _echo_marks(self) -> None:
        while not self.closed.is_set():
            due = self._marks_due
            if self._pending_marks:
                with trio.move_on_at(self._pending_marks[0][0]):
                    await due.wait()
            else:
                await due.wait()
            if due.is_set():
                self._marks_due = trio.Event()
            now = trio.current_time()
            echoed = False
            while self._pending_marks and self._pending_marks[0][0] <= now:
                if self.stopped:
                    return
                _, name = self._pending_marks.pop(0)
                self._send_text(_MARK % (self._next_seq(), self._sid, _encode(name)))
                self.marks_echoed.append((now, name))
                echoed = True
            if echoed:
                self._poke()


async def _connect(url: str, signature: str, timeout_s: float) -> tuple[trio.socket.SocketType,
                                                                        socket.socket,
                                                                        ClientProtocol,
                                                                        list[bytes]]:  # fmt: skip
    """TCP connect and WebSocket upgrade; the text messages that came with the 101."""
    uri = parse_uri(url)
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock = trio.socket.from_stdlib_socket(raw)
    try:
        with trio.fail_after(timeout_s):
            host = (await trio.socket.getaddrinfo(uri.host, uri.port, type=socket.SOCK_STREAM))[0]
            await sock.connect(host[4])
            protocol = ClientProtocol(uri, max_size=MAX_MESSAGE)
            request = protocol.connect()
            request.headers[SIGNATURE_HEADER] = signature
            protocol.send_request(request)
            for data in protocol.data_to_send():
                await sock.send(data)  # a small request: one write in practice
            early: list[bytes] = []
            while protocol.state is State.CONNECTING and protocol.handshake_exc is None:
                data = await sock.recv(RECV_BYTES)
                if data:
                    protocol.receive_data(data)
                else:
                    protocol.receive_eof()
                for event in protocol.events_received():
                    if getattr(event, "opcode", None) is Opcode.TEXT:
                        early.append(event.data)
        exc = protocol.handshake_exc
        if isinstance(exc, InvalidStatus):
            raise SimulatorError(f"media upgrade refused: HTTP {exc.response.status_code}")
        if exc is not None:
            raise SimulatorError(f"media upgrade failed: {exc}")
    except BaseException:
        sock.close()
        raise
    return sock, raw, protocol, early


@asynccontextmanager
async def lean_call(
    sim: TwilioSimulator, ticker: Ticker, webhook_url: str
) -> AsyncIterator[LeanCall]:
    """A whole call as `TwilioSimulator.call` places it: signed webhook, TwiML, signed
    upgrade, `connected`/`start`, then 20 ms frames from `ticker` until the block ends
    (the caller hangs up: `stop`, close) or the server ends the call."""
    call_sid = new_sid("CA")
    hook = await sim.post_webhook(webhook_url, call_sid=call_sid)
    if hook.stream is None:
        raise WebhookRefused(hook)
    stream_url = hook.stream.url
    sock, raw, protocol, early = await _connect(stream_url, sim.sign(stream_url, {}), sim.timeout)
    call = LeanCall(
        raw,
        protocol,
        ticker=ticker,
        account_sid=sim.account_sid,
        call_sid=call_sid,
        stream_sid=new_sid("MZ"),
    )
    try:
        if sim.rest is not None:
            sim.rest.register(call_sid, call.end_by_rest)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call._read)
            nursery.start_soon(call._drain_backlog)
            nursery.start_soon(call._echo_marks)
            for data in early:
                call._on_message(data)
            start = {
                "event": "start",
                "sequenceNumber": str(call._next_seq()),
                "start": {
                    "accountSid": sim.account_sid,
                    "streamSid": call.stream_sid,
                    "callSid": call_sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": dict(hook.stream.parameters),
                },
                "streamSid": call.stream_sid,
            }
            call._send_text(_CONNECTED)
            call._send_text(_encode(start))
            call.started_at = trio.current_time()
            if not call.stopped:
                ticker.join(call)
            try:
                yield call
            finally:
                with trio.CancelScope(shield=True):
                    await call.hangup()
                nursery.cancel_scope.cancel()
    finally:
        ticker.leave(call)
        call._lost()  # the stream is over, whoever ended it
        sock.close()


# ---------------------------------------------------------------------- the bench's script


@dataclass
class CallOutcome:
    outcome: str = "failed"  # "completed" | "busy" | "refused" | "failed"
    error: str = ""
    call_sid: str | None = None
    greeting_ms: float | None = None
    answer_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    frames_sent: int = 0  # caller media frames sent (fewer than 50 a second if we lag)
    barge_ins: int = 0  # the caller spoke over the agent's answer
    barge_ins_lost: int = 0  # ... and no clear came within BARGE_IN_CLEAR_S
    clears: int = 0
    marks_received: int = 0
    marks_echoed: int = 0
    marks_lost: int = 0  # pending when the stream closed on a call that did not complete


async def converse(
    call: Any,
    result: CallOutcome,
    *,
    turns: int,
    tone: bytes,
    barge_in: bool,
    think: Callable[[], float] | None = None,
) -> None:
    """The bench's caller script on an open call (a LeanCall or a SimCall): greeting,
    `turns` x (tone, answer, quiet); with `barge_in` the last turn is interrupted. With
    `think`, the caller stays silent `think()` seconds before each turn (frames of
    silence keep flowing), so calls that started together drift apart."""
    first = await call.wait_for_audio()
    result.greeting_ms = (first - call.started_at) * 1000
    await call.wait_until_quiet()
    for turn in range(turns):
        if think is not None:
            await trio.sleep(think())
        await call.say(tone)
        said = trio.current_time()
        answered = await call.wait_for_audio(after=said)
        result.answer_ms.append((answered - said) * 1000)
        if barge_in and turn == turns - 1:
            await trio.sleep_until(answered + BARGE_IN_AFTER_S)
            began = trio.current_time()
            result.barge_ins += 1
            await call.say(tone)
            said = trio.current_time()
            if not any(t > began for t in call.clears):
                with trio.move_on_at(began + BARGE_IN_CLEAR_S):
                    await _wait_for_clear(call, began)
            if not any(t > began for t in call.clears):
                result.barge_ins_lost += 1
            answered = await call.wait_for_audio(after=said)
            result.answer_ms.append((answered - said) * 1000)
        await call.wait_until_quiet()


async def _wait_for_clear(call: Any, after: float) -> None:
    if isinstance(call, LeanCall):
        await call.wait_for_clear(after=after)
    else:  # SimCall: its clears list grows; it wakes its mark echoer on each
        while not any(t > after for t in call.clears):
            if call.closed.is_set():
                raise SimulatorError("the stream closed without a clear")
            await call._marks_changed.wait()


def tally(call: Any, result: CallOutcome) -> None:
    """Copy what the call counted into `result` (after the call ended)."""
    result.frames_sent = call.frames_sent
    result.clears = len(call.clears)
    result.marks_received = len(call.marks_received)
    result.marks_echoed = len(call.marks_echoed)
    if result.outcome != "completed":
        pending = getattr(call, "marks_pending_at_close", None)
        if pending is None:  # SimCall keeps the list
            pending = len(call._pending_marks)
        result.marks_lost = pending


async def one_call(
    open_call: Callable[[], AbstractAsyncContextManager[Any]],
    *,
    turns: int,
    tone: bytes,
    timeout_s: float,
    barge_in: bool = False,
    think_s: float = 0.0,
    seed: int = 0,
) -> CallOutcome:
    """One whole call of the bench (`open_call()`: `sim.call(url)` or `lean_call(...)`);
    every failure is counted in the outcome, never raised. With `think_s`, a pause drawn
    uniformly from [0, think_s] (seeded by `seed`) before each turn."""
    think = functools.partial(random.Random(seed).uniform, 0.0, think_s) if think_s else None
    result = CallOutcome()
    t0 = trio.current_time()
    call = None
    try:
        with trio.fail_after(timeout_s):
            async with open_call() as call:
                result.call_sid = call.call_sid
                await converse(call, result, turns=turns, tone=tone, barge_in=barge_in, think=think)
        result.outcome = "completed"
    except WebhookRefused as e:
        result.outcome = "busy" if e.busy else "refused"
        result.error = f"HTTP {e.webhook.status_code}"
    except trio.TooSlowError:
        result.error = f"no progress within {timeout_s:.0f} s"
    except SimulatorError as e:
        result.error = f"SimulatorError: {e}"
    except Exception as e:  # a load test counts every failure, it never stops at one
        result.error = f"{type(e).__name__}: {e}"
    if call is not None:
        tally(call, result)
    result.seconds = trio.current_time() - t0
    return result

"""A Twilio simulator: a phone caller on Media Streams, and Twilio's call-update REST API.

`TwilioSimulator` does what Twilio does when a number rings (protocols.md §1):
signs and posts the voice webhook, parses the TwiML, opens the signed media WebSocket,
sends `connected` and `start` (with the TwiML `<Parameter>`s), then streams 20 ms mu-law
frames in real time (silence between what the script says), plays the agent's audio on
a real-time clock, echoes each mark when the audio before it has played, honours
`clear` (pending marks come back at once), sends DTMF and `stop`, and records all of it
with `trio.current_time()` timestamps. A call redirected to `<Dial action=...>` plays the
Dial as `TwilioSimulator.dial` scripts it (answered, or no-answer after the timeout),
posts the signed action callback like Twilio, and follows its answer: `<Hangup/>` ends
the call, `<Connect><Stream>` streams the same CallSid back (`SimCall.wait_for_return`).

`TwilioRestFake` answers `POST /2010-04-01/Accounts/{AC}/Calls/{CA}.json` like Twilio:
`Status=completed` ends the call (the simulated caller then gets `stop`), `Twiml=`
redirects it (the stream stops too), an ended call answers 400 code 21220, an unknown
one 404 code 20404, wrong credentials 401 code 20003. It also starts recordings
(`POST .../Calls/{CA}/Recordings.json`, like `calls(sid).recordings.create(...)`) and
sends their signed status callback when told (`finish_recording`), as Twilio does once
the call ends.

It also answers `POST /2010-04-01/Accounts/{AC}/Messages.json` (the Messages API): each
accepted text is kept in `messages` (`SentMessage`: to, from, body) for tests to read;
`message_faults` lists HTTP statuses to answer next (429 carries `retry_after` when set,
as Retry-After); a `To` that is not E.164 (or is in `invalid_numbers`) is refused with
400 code 21211, as Twilio refuses an invalid number.

    async with twilio_rest_fake(auth_token=TOKEN) as rest:
        sim = TwilioSimulator(auth_token=TOKEN, rest=rest)
        async with sim.call(f"http://127.0.0.1:{port}/twilio/voice") as call:
            await call.wait_for_audio()
            await call.say(tone_mulaw(0.6))
"""

from __future__ import annotations

import base64
import functools
import logging
import os
import re
import secrets
import ssl
import wave
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import hypercorn.config
import hypercorn.trio
import msgspec
import trio
import trio_websocket
from twilio.request_validator import RequestValidator

from hookline.audio import FRAME_BYTES, FRAME_SECONDS, SAMPLE_RATE, pcm16_to_mulaw

__all__ = [
    "DEFAULT_ACCOUNT_SID",
    "AppClear",
    "AppMark",
    "AppMedia",
    "DialOutcome",
    "DialScript",
    "FakeRecording",
    "MediaConnection",
    "RestRequest",
    "SentMessage",
    "SimCall",
    "SimEvent",
    "SimulatorError",
    "StreamTwiml",
    "TwilioRestFake",
    "TwilioSimulator",
    "Webhook",
    "WebhookRefused",
    "load_mulaw",
    "new_sid",
    "twilio_rest_fake",
]

DEFAULT_ACCOUNT_SID = "AC" + "0" * 31 + "1"
SIGNATURE_HEADER = "X-Twilio-Signature"


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two letters and 32 hex digits."""
    return prefix + secrets.token_hex(16)


class SimulatorError(Exception):
    """The server did not answer the way Twilio needs (no stream TwiML, refused socket)."""


class WebhookRefused(SimulatorError):
    """The webhook answered without a stream: busy TwiML, 403, an error page."""

    def __init__(self, webhook: Webhook) -> None:
        self.webhook = webhook
        super().__init__(
            f"webhook answered {webhook.status_code} without a stream: {webhook.text!r}"
        )

    @property
    def busy(self) -> bool:
        return self.webhook.status_code == 200 and self.webhook.hangup


# ---------------------------------------------------------------------- wire messages
# Twilio -> app, as Twilio sends them (protocols.md §1.2); app -> Twilio decoded below.
# Written from the protocol, not shared with the Twilio plugin: the simulator is the other
# side's independent implementation, so a misreading in one does not hide in both.


class _MediaFormat(msgspec.Struct):
    encoding: str = "audio/x-mulaw"
    sampleRate: int = SAMPLE_RATE
    channels: int = 1


class _StartBody(msgspec.Struct):
    accountSid: str
    streamSid: str
    callSid: str
    tracks: list[str]
    mediaFormat: _MediaFormat
    customParameters: dict[str, str]


class _Connected(msgspec.Struct, tag_field="event", tag="connected"):
    protocol: str = "Call"
    version: str = "1.0.0"


class _Start(msgspec.Struct, tag_field="event", tag="start"):
    sequenceNumber: str
    start: _StartBody
    streamSid: str


class _MediaBody(msgspec.Struct):
    track: str
    chunk: str
    timestamp: str
    payload: bytes


class _Media(msgspec.Struct, tag_field="event", tag="media"):
    sequenceNumber: str
    streamSid: str
    media: _MediaBody


class _DtmfBody(msgspec.Struct):
    track: str
    digit: str


class _Dtmf(msgspec.Struct, tag_field="event", tag="dtmf"):
    sequenceNumber: str
    streamSid: str
    dtmf: _DtmfBody


class _Name(msgspec.Struct):
    name: str


class _Mark(msgspec.Struct, tag_field="event", tag="mark"):
    sequenceNumber: str
    streamSid: str
    mark: _Name


class _StopBody(msgspec.Struct):
    accountSid: str
    callSid: str


class _Stop(msgspec.Struct, tag_field="event", tag="stop"):
    sequenceNumber: str
    streamSid: str
    stop: _StopBody


class AppPayload(msgspec.Struct):
    payload: bytes


class AppMedia(msgspec.Struct, tag_field="event", tag="media"):
    streamSid: str
    media: AppPayload


class AppMark(msgspec.Struct, tag_field="event", tag="mark"):
    streamSid: str
    mark: _Name


class AppClear(msgspec.Struct, tag_field="event", tag="clear"):
    streamSid: str


_decode_from_app = msgspec.json.Decoder(AppMedia | AppMark | AppClear).decode
_encode = msgspec.json.Encoder().encode


def load_mulaw(path: str | os.PathLike[str]) -> bytes:
    """Caller audio from a file: raw mu-law 8 kHz, or a WAV of 8 kHz mono 16-bit PCM."""
    data = Path(path).read_bytes()
    if data[:4] != b"RIFF":
        return data
    with wave.open(str(path), "rb") as wav:
        if (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) != (SAMPLE_RATE, 1, 2):
            raise SimulatorError(f"{path}: need 8000 Hz mono 16-bit PCM (or raw mu-law)")
        return pcm16_to_mulaw(wav.readframes(wav.getnframes()))


# ---------------------------------------------------------------------- the webhook


@dataclass
class StreamTwiml:
    """The `<Connect><Stream>` of a TwiML answer."""

    url: str
    parameters: dict[str, str]
    status_callback: str | None = None
    name: str | None = None


@dataclass
class Webhook:
    """What the server answered to the voice webhook."""

    status_code: int
    text: str
    stream: StreamTwiml | None = None
    say: list[str] = field(default_factory=list)
    hangup: bool = False
    params: dict[str, str] = field(default_factory=dict)  # what was posted


@dataclass
class DialTwiml:
    """The `<Dial>` of a TwiML document."""

    number: str
    timeout_s: float = 30.0  # Twilio's default
    action: str | None = None
    method: str = "POST"


def parse_dial(text: str) -> DialTwiml | None:
    node = ET.fromstring(text).find("Dial")
    if node is None:
        return None
    return DialTwiml(
        number=(node.text or "").strip(),
        timeout_s=float(node.attrib.get("timeout", 30)),
        action=node.attrib.get("action"),
        method=node.attrib.get("method", "POST"),
    )


@dataclass
class DialScript:
    """How the person a `<Dial>` rings behaves (set `TwilioSimulator.dial`).

    `status`: "completed" (answered, talks `talk_s` seconds, then hangs up), or
    "no-answer", "busy", "failed". `ring_s`: how long it rings before that; None rings
    the Dial's whole timeout for a no-answer (like Twilio) and 0.2 s otherwise.
    """

    status: str = "no-answer"
    ring_s: float | None = None
    talk_s: float = 0.2


@dataclass
class DialOutcome:
    """What happened to one `<Dial>` of the call, and what the action URL answered."""

    dial: DialTwiml
    fields: dict[str, str]  # posted to the action URL
    status_code: int = 0
    text: str = ""
    hangup: bool = False
    stream: StreamTwiml | None = None


def parse_twiml(text: str) -> tuple[StreamTwiml | None, list[str], bool]:
    """(stream, spoken texts, ends with Hangup) of a TwiML document."""
    root = ET.fromstring(text)
    if root.tag != "Response":
        raise SimulatorError(f"TwiML root is <{root.tag}>, not <Response>")
    stream = None
    node = root.find("./Connect/Stream")
    if node is not None:
        stream = StreamTwiml(
            url=node.attrib["url"],
            parameters={p.attrib["name"]: p.attrib["value"] for p in node.findall("Parameter")},
            status_callback=node.attrib.get("statusCallback"),
            name=node.attrib.get("name"),
        )
    say = [s.text or "" for s in root.findall("Say")]
    return stream, say, root.find("Hangup") is not None


# ---------------------------------------------------------------------- the media socket


@dataclass
class SimEvent:
    t: float
    kind: str  # "sent:media", "received:mark", "echoed:mark", "closed", ...
    detail: str = ""


class MediaConnection:
    """The raw media WebSocket as Twilio holds it: numbered sends, raw access for tests."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, stream_sid: str) -> None:
        self.ws = ws
        self.stream_sid = stream_sid
        self._seq = 0
        self._chunk = 0
        self._lock = trio.StrictFIFOLock()

    def next_seq(self) -> str:
        self._seq += 1
        return str(self._seq)

    async def send(self, build: Callable[[str], msgspec.Struct]) -> None:
        """Send the message `build(sequenceNumber)`, numbered in sending order."""
        async with self._lock:
            await self.ws.send_message(_encode(build(self.next_seq())).decode())

    async def send_raw(self, message: str | bytes) -> None:
        """Anything at all, for bad-input tests (no sequence number is used)."""
        async with self._lock:
            await self.ws.send_message(message)

    async def send_start(
        self, *, call_sid: str, parameters: dict[str, str], account_sid: str = DEFAULT_ACCOUNT_SID
    ) -> None:
        """`connected`, then `start` carrying `parameters` as customParameters."""
        body = _StartBody(
            accountSid=account_sid,
            streamSid=self.stream_sid,
            callSid=call_sid,
            tracks=["inbound"],
            mediaFormat=_MediaFormat(),
            customParameters=parameters,
        )
        await self.send_raw(_encode(_Connected()).decode())
        await self.send(lambda seq: _Start(seq, body, self.stream_sid))

    async def send_media(self, audio: bytes, *, stream_sid: str | None = None) -> None:
        self._chunk += 1
        body = _MediaBody("inbound", str(self._chunk), str((self._chunk - 1) * 20), audio)
        await self.send(lambda seq: _Media(seq, stream_sid or self.stream_sid, body))

    async def send_dtmf(self, digit: str) -> None:
        await self.send(lambda seq: _Dtmf(seq, self.stream_sid, _DtmfBody("inbound_track", digit)))

    async def send_mark(self, name: str) -> None:
        await self.send(lambda seq: _Mark(seq, self.stream_sid, _Name(name)))

    async def send_stop(self, *, call_sid: str, account_sid: str = DEFAULT_ACCOUNT_SID) -> None:
        await self.send(lambda seq: _Stop(seq, self.stream_sid, _StopBody(account_sid, call_sid)))

    async def receive(self) -> AppMedia | AppMark | AppClear:
        """The next message from the app, decoded (raises on anything Twilio would reject)."""
        return _decode_from_app(await self.ws.get_message())


class SimCall:
    """One simulated caller on an open media stream. Create with `TwilioSimulator.call`."""

    def __init__(
        self,
        conn: MediaConnection,
        *,
        account_sid: str,
        call_sid: str,
        webhook: Webhook,
        stream_silence: bool,
    ) -> None:
        self.conn = conn
        self.account_sid = account_sid
        self.call_sid = call_sid
        self.stream_sid = conn.stream_sid
        self.webhook = webhook
        self.stream_silence = stream_silence
        self.events: list[SimEvent] = []
        self.started_at: float | None = None  # when `start` was sent
        self.first_audio_at: float | None = None  # first agent audio received
        self.last_audio_at: float | None = None
        self.agent_audio = bytearray()  # everything the agent sent, in order
        self.cleared_seconds = 0.0  # agent audio dropped by clears before it played
        self.marks_received: list[str] = []
        self.marks_echoed: list[tuple[float, str]] = []
        self.clears: list[float] = []
        self.close_code: int | None = None
        self.closed = trio.Event()
        self.stopped = False  # `stop` sent
        self.ended_by_rest: str | None = None
        self.frames_sent = 0  # caller media frames (20 ms each), speech and silence
        self._outgoing = bytearray()  # caller audio not yet sent
        self._drained = trio.Event()
        self._drained.set()
        self._play_end = 0.0  # when the audio received so far will have played
        self._pending_marks: list[tuple[float, str]] = []
        self._marks_changed = trio.Event()
        self._audio_arrived = trio.Event()
        self._rest_end = trio.Event()
        self.dial: DialOutcome | None = None  # the Dial this call was redirected to
        self.returned: SimCall | None = None  # the stream back after an unanswered Dial
        self._dial_done = trio.Event()

    # ------------------------------------------------------------------ what a test reads

    @property
    def agent_seconds(self) -> float:
        return len(self.agent_audio) / SAMPLE_RATE

    def heard_seconds(self) -> float:
        """Agent audio the caller has heard so far (played, not cleared)."""
        unplayed = max(0.0, self._play_end - trio.current_time())
        return self.agent_seconds - self.cleared_seconds - unplayed

    @property
    def playing(self) -> bool:
        return trio.current_time() < self._play_end

    def log(self, kind: str, detail: str = "") -> None:
        self.events.append(SimEvent(trio.current_time(), kind, detail))

    # ------------------------------------------------------------------ what a test does

    async def say(self, audio: bytes) -> None:
        """Speak `audio` (mu-law) in real time, 20 ms per frame; returns once it was sent."""
        self._outgoing += audio
        self._drained = trio.Event()
        await self._drained.wait()

    async def say_file(self, path: str | os.PathLike[str]) -> None:
        """Speak a recording: raw mu-law 8 kHz (.ulaw/.raw) or a WAV (8 kHz mono PCM16)."""
        await self.say(load_mulaw(path))

    async def silence(self, seconds: float) -> None:
        await self.say(b"\xff" * round(seconds * SAMPLE_RATE))

    async def dtmf(self, digit: str) -> None:
        await self.conn.send_dtmf(digit)
        self.log("sent:dtmf", digit)

    async def hangup(self) -> None:
        """The caller hangs up: `stop`, then Twilio closes the socket."""
        await self._stop_and_close()

    async def wait_for_audio(self, *, after: float | None = None) -> float:
        """Wait for agent audio received after `after` (default: any); returns its time.

        Like every `wait_*` here it waits as long as it takes: bound it with `trio.fail_after`.
        """
        while True:
            if self.last_audio_at is not None and (after is None or self.last_audio_at > after):
                return self.last_audio_at
            if self.closed.is_set():
                raise SimulatorError("the stream closed before any agent audio")
            await self._audio_arrived.wait()

    async def wait_until_quiet(self, quiet: float = 0.3) -> None:
        """Wait until the agent's audio has played (its marks echoed) and nothing new
        came for `quiet` seconds."""
        while not self.closed.is_set():
            now = trio.current_time()
            last = self.last_audio_at or now
            due = max(self._play_end, last + quiet)
            if now < due:
                await trio.sleep_until(due)
            elif self._pending_marks:
                await self._marks_changed.wait()
            else:
                return

    async def wait_for_mark(self, name: str) -> float:
        while True:
            for t, echoed in self.marks_echoed:
                if echoed == name:
                    return t
            await self._marks_changed.wait()

    async def wait_for_clear(self) -> float:
        """Wait until the agent sent a `clear`; returns when the first one arrived."""
        while not self.clears:
            if self.closed.is_set():
                raise SimulatorError("the stream closed without a clear")
            await self._marks_changed.wait()  # a clear wakes the mark echoer too
        return self.clears[0]

    async def wait_closed(self) -> None:
        await self.closed.wait()

    async def wait_for_dial(self) -> DialOutcome:
        """Wait until a transfer's `<Dial>` ended and its action URL answered."""
        await self._dial_done.wait()
        if self.dial is None:
            raise SimulatorError("the call ended without a <Dial> with an action URL")
        return self.dial

    async def wait_for_return(self) -> SimCall:
        """Wait for the caller to be streamed back after an unanswered `<Dial>`."""
        await self.wait_for_dial()
        if self.returned is None:
            raise SimulatorError(f"no stream back after the Dial: {self.dial}")
        return self.returned

    # ------------------------------------------------------------------ the tasks

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send `connected` and `start`, then stream and listen until the socket closes."""
        params = dict(self.webhook.stream.parameters) if self.webhook.stream else {}
        try:
            await self.conn.send_start(
                call_sid=self.call_sid, parameters=params, account_sid=self.account_sid
            )
        except trio_websocket.ConnectionClosed as e:
            self.close_code = e.reason.code if e.reason else None
            self.log("closed", str(self.close_code))
            self.stopped = True
            self.closed.set()
            task_status.started()
            return
        self.started_at = trio.current_time()
        self.log("sent:start")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._listen, nursery.cancel_scope)
            nursery.start_soon(self._stream_frames)
            nursery.start_soon(self._echo_marks)
            task_status.started()

    async def _stream_frames(self) -> None:
        # Frames go out on an absolute 20 ms grid, so the stream never drifts.
        t0 = trio.current_time()
        n = 0
        try:
            while not self.stopped:
                if self._outgoing:
                    frame = bytes(self._outgoing[:FRAME_BYTES]).ljust(FRAME_BYTES, b"\xff")
                    del self._outgoing[:FRAME_BYTES]
                    if not self._outgoing:
                        self._drained.set()
                elif self.stream_silence:
                    frame = b"\xff" * FRAME_BYTES
                else:
                    frame = b""
                if frame:
                    await self.conn.send_media(frame)
                    self.frames_sent += 1
                n += 1
                await trio.sleep_until(t0 + n * FRAME_SECONDS)
        except (trio_websocket.ConnectionClosed, trio.BrokenResourceError):
            self._drained.set()

    async def _listen(self, scope: trio.CancelScope) -> None:
        try:
            while True:
                text = await self.conn.ws.get_message()
                self._on_message(text)
        except trio_websocket.ConnectionClosed as e:
            self.close_code = e.reason.code if e.reason else None
            self.log("closed", str(self.close_code))
        finally:
            self.stopped = True
            self._drained.set()
            self.closed.set()
            self._audio_arrived.set()
            self._wake_marks()
            scope.cancel()

    def _on_message(self, text: str | bytes) -> None:
        now = trio.current_time()
        try:
            msg = _decode_from_app(text)
        except msgspec.DecodeError as e:
            self.log("received:invalid", str(e))
            return
        if msg.streamSid != self.stream_sid:
            self.log("received:wrong_stream_sid", msg.streamSid)
            return
        if isinstance(msg, AppMedia):
            audio = msg.media.payload
            if self.first_audio_at is None:
                self.first_audio_at = now
            self.last_audio_at = now
            self.agent_audio += audio
            self._play_end = max(now, self._play_end) + len(audio) / SAMPLE_RATE
            self.log("received:media", str(len(audio)))
            self._audio_arrived.set()
            self._audio_arrived = trio.Event()
        elif isinstance(msg, AppMark):
            self.marks_received.append(msg.mark.name)
            self._pending_marks.append((max(now, self._play_end), msg.mark.name))
            self.log("received:mark", msg.mark.name)
            self._wake_marks()
        else:
            self.clears.append(now)
            self.cleared_seconds += max(0.0, self._play_end - now)
            self._play_end = now
            self.log("received:clear")
            # Cleared audio never plays: every pending mark is due now.
            self._pending_marks = [(now, name) for _, name in self._pending_marks]
            self._wake_marks()

    def _wake_marks(self) -> None:
        self._marks_changed.set()
        self._marks_changed = trio.Event()

    async def _echo_marks(self) -> None:
        while not self.stopped:
            if not self._pending_marks:
                await self._marks_changed.wait()
                continue
            with trio.move_on_at(self._pending_marks[0][0]):
                await self._marks_changed.wait()
                continue
            await self._echo_due()

    async def _echo_due(self) -> None:
        now = trio.current_time()
        while self._pending_marks and self._pending_marks[0][0] <= now:
            _, name = self._pending_marks.pop(0)
            try:
                await self.conn.send_mark(name)
            except trio_websocket.ConnectionClosed:
                return
            self.marks_echoed.append((trio.current_time(), name))
            self.log("echoed:mark", name)
        self._wake_marks()

    async def _stop_and_close(self) -> None:
        if self.stopped or self.closed.is_set():
            return
        self.stopped = True
        try:
            await self.conn.send_stop(call_sid=self.call_sid, account_sid=self.account_sid)
            self.log("sent:stop")
            await self.conn.ws.aclose()
        except trio_websocket.ConnectionClosed:
            pass

    def end_by_rest(self, how: str) -> None:
        """Called by the REST fake: the call was completed or redirected."""
        self.ended_by_rest = how
        self.log("rest:" + how)
        self._rest_end.set()


# ---------------------------------------------------------------------- the simulator


class TwilioSimulator:
    """Places simulated calls against a hookline server (or any Twilio webhook)."""

    def __init__(
        self,
        *,
        auth_token: str | None,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        rest: TwilioRestFake | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.auth_token = auth_token
        self.account_sid = account_sid
        self.rest = rest
        self.timeout = timeout
        self.dial = DialScript()  # how a transfer's <Dial> goes
        self._validator = RequestValidator(auth_token) if auth_token else None

    def _http(self) -> httpx.AsyncClient:
        # One TLS context for every request: building one loads the CA bundle (~60 ms of
        # CPU), which stalls a load test that starts a hundred calls at once.
        return httpx.AsyncClient(timeout=self.timeout, verify=_tls_context())

    def sign(self, url: str, params: dict[str, str]) -> str:
        if self._validator is None:
            raise SimulatorError("no auth token to sign with")
        return self._validator.compute_signature(url, params)

    async def post_webhook(
        self,
        url: str,
        *,
        call_sid: str | None = None,
        from_number: str = "+15550100",
        to_number: str = "+15550199",
        sign: bool | str = True,
        sign_url: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, str] | None = None,
    ) -> Webhook:
        """POST the incoming-call webhook. `sign`: True, False (unsigned) or a signature."""
        params = {
            "CallSid": call_sid or new_sid("CA"),
            "AccountSid": self.account_sid,
            "From": from_number,
            "To": to_number,
            "Caller": from_number,
            "Called": to_number,
            "CallStatus": "ringing",
            "ApiVersion": "2010-04-01",
            "Direction": "inbound",
            **(extra or {}),
        }
        all_headers = dict(headers or {})
        if sign is True:
            all_headers[SIGNATURE_HEADER] = self.sign(sign_url or url, params)
        elif sign:
            all_headers[SIGNATURE_HEADER] = sign
        async with self._http() as client:
            response = await client.post(url, data=params, headers=all_headers)
        hook = Webhook(status_code=response.status_code, text=response.text, params=params)
        if response.status_code == 200:
            hook.stream, hook.say, hook.hangup = parse_twiml(response.text)
        return hook

    async def post_status(self, url: str, fields: dict[str, str], *, sign: bool = True) -> int:
        headers = {SIGNATURE_HEADER: self.sign(url, fields)} if sign else {}
        async with self._http() as client:
            response = await client.post(url, data=fields, headers=headers)
        return response.status_code

    @asynccontextmanager
    async def open_media(
        self,
        stream_url: str,
        *,
        connect_url: str | None = None,
        sign: bool | str = True,
        stream_sid: str | None = None,
    ) -> AsyncIterator[MediaConnection]:
        """Open the media WebSocket, signed like Twilio signs the upgrade (protocols.md §1.7).

        Raises trio_websocket.ConnectionRejected when the server refuses the upgrade.
        """
        headers: list[tuple[bytes, bytes]] = []
        if sign is True:
            headers.append((SIGNATURE_HEADER.encode(), self.sign(stream_url, {}).encode()))
        elif sign:
            headers.append((SIGNATURE_HEADER.encode(), sign.encode()))
        async with trio_websocket.open_websocket_url(
            connect_url or stream_url,
            extra_headers=headers,
            connect_timeout=self.timeout,
            disconnect_timeout=2,
            message_queue_size=64,
            max_message_size=4 * 1024 * 1024,
        ) as ws:
            yield MediaConnection(ws, stream_sid or new_sid("MZ"))

    @asynccontextmanager
    async def call(
        self,
        webhook_url: str,
        *,
        from_number: str = "+15550100",
        to_number: str = "+15550199",
        connect_url: str | None = None,
        sign_url: str | None = None,
        stream_silence: bool = True,
        status_callbacks: bool = False,
    ) -> AsyncIterator[SimCall]:
        """A whole call: webhook, signed socket, `connected`/`start`, real-time streaming.

        Leaving the block hangs up (`stop`) if the call is still up.
        """
        call_sid = new_sid("CA")
        hook = await self.post_webhook(
            webhook_url,
            call_sid=call_sid,
            from_number=from_number,
            to_number=to_number,
            sign=self._validator is not None,
            sign_url=sign_url,
        )
        if hook.stream is None:
            raise WebhookRefused(hook)
        async with self.open_media(
            hook.stream.url, connect_url=connect_url, sign=self._validator is not None
        ) as conn:
            call = SimCall(
                conn,
                account_sid=self.account_sid,
                call_sid=call_sid,
                webhook=hook,
                stream_silence=stream_silence,
            )
            if self.rest is not None:
                self.rest.register(call_sid, call.end_by_rest)
            async with trio.open_nursery() as nursery:
                await nursery.start(call.run)
                nursery.start_soon(self._stop_on_rest, call)
                if status_callbacks and hook.stream.status_callback:
                    nursery.start_soon(
                        self._stream_status, call, hook.stream.status_callback, "stream-started"
                    )
                try:
                    yield call
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(5):
                        leg: SimCall | None = call
                        while leg is not None:  # the caller hangs up on whichever stream
                            await leg._stop_and_close()
                            await leg.closed.wait()
                            leg = leg.returned
                    nursery.cancel_scope.cancel()

    async def _stop_on_rest(self, call: SimCall) -> None:
        """After a REST update: the stream stops; a redirect to a `<Dial>` is played."""
        try:
            await call._rest_end.wait()
            await call._stop_and_close()
            twiml = self.rest.twiml.get(call.call_sid, "") if self.rest else ""
            if call.ended_by_rest != "redirected" or not twiml.lstrip().startswith("<"):
                return
            dial = parse_dial(twiml)
            if dial is not None and dial.action:
                await self._play_dial(call, dial)
        finally:
            call._dial_done.set()

    async def _play_dial(self, call: SimCall, dial: DialTwiml) -> None:
        """Ring the Dial's number as `self.dial` scripts it, post the action callback,
        and follow its TwiML: hang up, or stream the same CallSid back."""
        script = self.dial
        answered = script.status == "completed"
        ring = script.ring_s
        if ring is None:
            ring = dial.timeout_s if script.status == "no-answer" else 0.2
        call.log("dial:ringing", dial.number)
        await trio.sleep(ring + (script.talk_s if answered else 0.0))
        fields = {
            "AccountSid": self.account_sid,
            "CallSid": call.call_sid,
            "From": call.webhook.params.get("From", ""),
            "To": call.webhook.params.get("To", ""),
            "CallStatus": "in-progress",
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
            "DialCallSid": new_sid("CA"),
            "DialCallStatus": script.status,
        }
        if answered:
            fields["DialCallDuration"] = str(max(1, round(script.talk_s)))
        call.log("dial:" + script.status)
        headers = {SIGNATURE_HEADER: self.sign(dial.action, fields)} if self._validator else {}
        assert dial.action is not None
        async with self._http() as client:
            response = await client.post(dial.action, data=fields, headers=headers)
        outcome = DialOutcome(dial, fields, response.status_code, response.text)
        call.dial = outcome
        if response.status_code != 200:
            call.log("dial:action_refused", str(response.status_code))
            return
        outcome.stream, _, outcome.hangup = parse_twiml(response.text)
        if outcome.stream is None:
            if self.rest is not None:
                self.rest.status[call.call_sid] = "completed"
            call.log("dial:call_ended")
            return
        await self._stream_back(call, outcome)

    async def _stream_back(self, call: SimCall, outcome: DialOutcome) -> None:
        assert outcome.stream is not None
        hook = Webhook(200, outcome.text, outcome.stream, params=call.webhook.params)
        async with self.open_media(outcome.stream.url, sign=self._validator is not None) as conn:
            back = SimCall(
                conn,
                account_sid=self.account_sid,
                call_sid=call.call_sid,
                webhook=hook,
                stream_silence=call.stream_silence,
            )
            if self.rest is not None:
                self.rest.register(call.call_sid, back.end_by_rest)
            async with trio.open_nursery() as nursery:
                await nursery.start(back.run)
                call.returned = back
                call.log("dial:streamed_back", back.stream_sid)
                call._dial_done.set()
                nursery.start_soon(self._stop_on_rest, back)
                await back.closed.wait()
                if back._rest_end.is_set():  # transferred again: follow that Dial too
                    await back._dial_done.wait()
                nursery.cancel_scope.cancel()

    async def _stream_status(self, call: SimCall, url: str, event: str) -> None:
        fields = {
            "AccountSid": self.account_sid,
            "CallSid": call.call_sid,
            "StreamSid": call.stream_sid,
            "StreamName": (call.webhook.stream.name if call.webhook.stream else "") or "",
            "StreamEvent": event,
            "Timestamp": "Wed, 25 Nov 2026 12:00:00 +0000",
        }
        code = await self.post_status(url, fields, sign=self._validator is not None)
        call.log("sent:status", f"{event} -> {code}")


# ---------------------------------------------------------------------- the REST fake


@dataclass
class RestRequest:
    t: float
    account_sid: str
    call_sid: str
    fields: dict[str, str]
    status_code: int
    code: int | None = None  # Twilio's error code, when refused


@dataclass
class SentMessage:
    """A text the Messages API accepted."""

    t: float
    sid: str
    to: str
    from_: str
    body: str


class _MessageResource(msgspec.Struct):
    sid: str
    account_sid: str
    to: str
    from_: str = msgspec.field(name="from")
    body: str = ""
    status: str = "queued"
    api_version: str = "2010-04-01"


_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
INVALID_NUMBER = 21211


class _RestError(msgspec.Struct):
    code: int
    message: str
    more_info: str
    status: int


class _CallResource(msgspec.Struct):
    sid: str
    account_sid: str
    status: str
    api_version: str = "2010-04-01"
    uri: str = ""


_INJECTED = 20500  # the error code of a failure from `fail_next`


class _RecordingResource(msgspec.Struct):
    sid: str
    account_sid: str
    call_sid: str
    status: str
    channels: int = 1
    source: str = "StartCallRecordingAPI"
    api_version: str = "2010-04-01"
    uri: str = ""


@dataclass
class FakeRecording:
    """A recording started through the REST fake."""

    sid: str
    call_sid: str
    callback_url: str
    callback_events: list[str]
    status: str = "in-progress"


class TwilioRestFake:
    """Twilio's call-update endpoint on loopback. Use `twilio_rest_fake()` to run it."""

    def __init__(self, *, account_sid: str, auth_token: str) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.url = ""  # set once serving: http://127.0.0.1:PORT
        self.requests: list[RestRequest] = []
        self.status: dict[str, str] = {}  # call sid -> "in-progress" | "completed"
        self.twiml: dict[str, str] = {}  # call sid -> the TwiML it was redirected to
        self.fail_next: list[int] = []  # HTTP statuses to answer next, e.g. [503]
        self.retry_after: str | None = None  # Retry-After header on those failures
        self._on_end: dict[str, Callable[[str], None]] = {}
        self.changed = trio.Event()
        self.recordings: dict[str, FakeRecording] = {}  # recording sid -> recording
        self.messages: list[SentMessage] = []  # texts accepted by the Messages API
        self.message_faults: list[int] = []  # HTTP statuses the Messages API answers next
        self.invalid_numbers: set[str] = set()  # refused with 21211 like a malformed one

    def register(self, call_sid: str, on_end: Callable[[str], None] | None = None) -> None:
        """A live call the fake knows; `on_end("completed"|"redirected")` when updated."""
        self.status[call_sid] = "in-progress"
        if on_end is not None:
            self._on_end[call_sid] = on_end

    async def app(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        if scope["path"].endswith("/Messages.json"):
            status, payload, req = self._message(scope, body)
        else:
            status, payload, req = self._handle(scope, body)
        self.requests.append(req)
        self.changed.set()
        self.changed = trio.Event()
        data = _encode(payload)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
        ]
        if req.code == _INJECTED and self.retry_after is not None:
            headers.append((b"retry-after", self.retry_after.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    def _handle(self, scope: dict, body: bytes) -> tuple[int, msgspec.Struct, RestRequest]:
        fields = {k: v[-1] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        parts = scope["path"].strip("/").split("/")
        account = parts[2] if len(parts) > 2 else ""
        call_sid = parts[4].removesuffix(".json") if len(parts) == 5 else ""
        req = RestRequest(trio.current_time(), account, call_sid, fields, 200)

        def error(status: int, code: int, message: str) -> tuple[int, msgspec.Struct, RestRequest]:
            req.status_code, req.code = status, code
            info = f"https://www.twilio.com/docs/errors/{code}"
            return status, _RestError(code, message, info, status), req

        if len(parts) == 6 and parts[5] == "Recordings.json" and parts[3] == "Calls":
            req.call_sid = parts[4]
            return self._start_recording(scope, account, fields, req, error)
        if scope["method"] != "POST" or len(parts) != 5 or parts[:2] != ["2010-04-01", "Accounts"]:
            return error(404, 20404, "The requested resource was not found")
        if not self._authorized(scope, account):
            return error(401, 20003, "Authenticate")
        if self.fail_next:
            return error(self.fail_next.pop(0), _INJECTED, "Internal Server Error")
        state = self.status.get(call_sid)
        if account != self.account_sid or state is None:
            return error(404, 20404, f"The requested resource {scope['path']} was not found")
        if state != "in-progress":
            return error(400, 21220, "Call is not in-progress. Cannot redirect.")
        if "Twiml" in fields and "Url" in fields:
            return error(400, 21213, "Url and Twiml are mutually exclusive")
        how = ""
        if fields.get("Status") == "completed":
            self.status[call_sid] = "completed"
            how = "completed"
        elif "Twiml" in fields or "Url" in fields:
            self.twiml[call_sid] = fields.get("Twiml", fields.get("Url", ""))
            how = "redirected"
        if how and call_sid in self._on_end:
            self._on_end[call_sid](how)
        return 200, _CallResource(call_sid, account, self.status[call_sid], uri=scope["path"]), req

    def _start_recording(
        self, scope: dict, account: str, fields: dict[str, str], req: RestRequest, error: Any
    ) -> tuple[int, msgspec.Struct, RestRequest]:
        if scope["method"] != "POST" or scope["path"].strip("/").split("/")[:2] != [
            "2010-04-01", "Accounts",
        ]:  # fmt: skip
            return error(404, 20404, "The requested resource was not found")
        if not self._authorized(scope, account):
            return error(401, 20003, "Authenticate")
        if self.fail_next:
            return error(self.fail_next.pop(0), _INJECTED, "Internal Server Error")
        state = self.status.get(req.call_sid)
        if account != self.account_sid or state is None:
            return error(404, 20404, f"The requested resource {scope['path']} was not found")
        if state != "in-progress":
            return error(400, 21220, "Call is not in-progress. Cannot start a recording.")
        sid = new_sid("RE")
        self.recordings[sid] = FakeRecording(
            sid=sid,
            call_sid=req.call_sid,
            callback_url=fields.get("RecordingStatusCallback", ""),
            callback_events=fields.get("RecordingStatusCallbackEvent", "completed").split(),
        )
        resource = _RecordingResource(sid, account, req.call_sid, "in-progress", uri=scope["path"])
        req.status_code = 201
        return 201, resource, req

    def recordings_of(self, call_sid: str) -> list[FakeRecording]:
        return [r for r in self.recordings.values() if r.call_sid == call_sid]

    async def finish_recording(
        self, sid: str, *, duration_s: int = 42, sign: bool | str = True
    ) -> int:
        """Send the recording's `completed` status callback, signed like Twilio signs it
        (`sign`: True, False for unsigned, or a signature to send); the HTTP status."""
        recording = self.recordings[sid]
        recording.status = "completed"
        fields = {
            "AccountSid": self.account_sid,
            "CallSid": recording.call_sid,
            "RecordingSid": sid,
            "RecordingUrl": f"https://api.twilio.com/2010-04-01/Accounts/{self.account_sid}"
            f"/Recordings/{sid}",
            "RecordingStatus": "completed",
            "RecordingDuration": str(duration_s),
            "RecordingChannels": "1",
            "RecordingStartTime": "Wed, 25 Nov 2026 12:00:00 +0000",
            "RecordingSource": "StartCallRecordingAPI",
            "RecordingTrack": "both",
            "ErrorCode": "0",
        }
        headers = {}
        if sign is True:
            validator = RequestValidator(self.auth_token)
            headers[SIGNATURE_HEADER] = validator.compute_signature(recording.callback_url, fields)
        elif sign:
            headers[SIGNATURE_HEADER] = sign
        async with httpx.AsyncClient(timeout=10.0) as client:
            response = await client.post(recording.callback_url, data=fields, headers=headers)
        return response.status_code

    def _message(self, scope: dict, body: bytes) -> tuple[int, msgspec.Struct, RestRequest]:
        """`POST .../Messages.json`: send a text (or answer the next injected fault)."""
        fields = {k: v[-1] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        parts = scope["path"].strip("/").split("/")
        account = parts[2] if len(parts) == 4 else ""
        req = RestRequest(trio.current_time(), account, "", fields, 200)

        def error(status: int, code: int, message: str) -> tuple[int, msgspec.Struct, RestRequest]:
            req.status_code, req.code = status, code
            info = f"https://www.twilio.com/docs/errors/{code}"
            return status, _RestError(code, message, info, status), req

        if scope["method"] != "POST" or len(parts) != 4 or account != self.account_sid:
            return error(404, 20404, "The requested resource was not found")
        if not self._authorized(scope, account):
            return error(401, 20003, "Authenticate")
        if self.message_faults:  # code 20500 like the call faults: Retry-After applies
            status = self.message_faults.pop(0)
            return error(status, _INJECTED, "Too Many Requests" if status == 429 else "Error")
        to, sender, text = fields.get("To", ""), fields.get("From", ""), fields.get("Body", "")
        if not _E164.match(to) or to in self.invalid_numbers:
            return error(400, INVALID_NUMBER, f"The 'To' number {to} is not a valid phone number.")
        if not sender or not text:
            return error(400, 21602, "Message body is required.")
        sid = new_sid("SM")
        self.messages.append(SentMessage(trio.current_time(), sid, to, sender, text))
        return 201, _MessageResource(sid, account, to, sender, text), req

    def _authorized(self, scope: dict, account: str) -> bool:
        for name, value in scope["headers"]:
            if name.lower() == b"authorization" and value.startswith(b"Basic "):
                try:
                    user, _, password = base64.b64decode(value[6:]).decode().partition(":")
                except ValueError:
                    return False
                return user == account == self.account_sid and password == self.auth_token
        return False

    def updates(self, call_sid: str) -> list[RestRequest]:
        return [r for r in self.requests if r.call_sid == call_sid]


@asynccontextmanager
async def twilio_rest_fake(
    *, auth_token: str, account_sid: str = DEFAULT_ACCOUNT_SID
) -> AsyncIterator[TwilioRestFake]:
    """Serve a `TwilioRestFake` on 127.0.0.1 (ephemeral port) for the block."""
    fake = TwilioRestFake(account_sid=account_sid, auth_token=auth_token)
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hookline_testkit.twilio_rest")
    config.graceful_timeout = 0.5
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(hypercorn.trio.serve, fake.app, config, shutdown_trigger=stop.wait)
        )
        fake.url = binds[0]
        try:
            yield fake
        finally:
            stop.set()

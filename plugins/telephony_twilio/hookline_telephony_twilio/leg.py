"""One media stream: the typed WebSocket and the `CallLeg` the engine drives.

Inbound frames are read straight from the ASGI `receive` when the engine pulls the next
event, so there is no queue between Twilio and the engine (WebSocket flow control is
the back-pressure). Outbound audio goes out as soon as it arrives, in whole 20 ms
frames (a remainder shorter than a frame waits for more audio or for the next mark).
Bad input is dropped and counted per call; the first of each kind is logged.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator

import msgspec
import trio

from hookline import (
    FRAME_BYTES,
    AudioIn,
    CallInfo,
    CallLog,
    DtmfIn,
    HangUp,
    LegEvent,
    MarkReached,
    ProviderError,
    held,
)

from . import protocol as p
from .asgi import Receive, Send
from .control import CallControl
from .transfer import TransferBook

__all__ = ["BadInput", "CallLog", "MediaSocket", "TwilioLeg"]

# Largest media message we send: 2 s of audio. Twilio takes any length; this only keeps
# single frames on the socket small enough that a `clear` is never stuck behind one.
MAX_PIECE = 100 * FRAME_BYTES


class BadInput:
    """Bad input of each kind in one stream: logged the first time, counted after."""

    def __init__(self, log: logging.LoggerAdapter) -> None:
        self.counts: Counter[str] = Counter()
        self._log = log

    def note(self, kind: str, detail: str = "") -> None:
        self.counts[kind] += 1
        if self.counts[kind] == 1:
            self._log.warning(
                "dropped bad input from Twilio: %s%s (further ones are only counted)",
                kind,
                f" ({detail[:120]})" if detail else "",
            )

    def summary(self) -> str:
        return ", ".join(f"{kind}={n}" for kind, n in sorted(self.counts.items()))


class MediaSocket:
    """The ASGI side of one accepted media WebSocket: typed receive, ordered send."""

    def __init__(self, receive: Receive, send: Send, *, max_bytes: int, bad: BadInput) -> None:
        self._receive = receive
        self._send = send
        self._max_bytes = max_bytes
        self._send_lock = trio.Lock()
        self.bad = bad
        self.closed = False  # by either side
        self.close_code: int | None = None

    async def next_message(self) -> p.Inbound | None:
        """The next well-formed message, or None once the socket is gone."""
        while not self.closed:
            event = await self._receive()
            kind = event["type"]
            if kind == "websocket.disconnect":
                self.closed = True
                self.close_code = event.get("code")
                return None
            if kind != "websocket.receive":
                continue
            text = event.get("text")
            if text is None:
                self.bad.note("binary_frame")
                continue
            if len(text) > self._max_bytes:
                self.bad.note("oversized_message", f"{len(text)} characters")
                continue
            try:
                return p.decode_inbound(text)
            except msgspec.DecodeError as e:
                self.bad.note(p.classify_error(text, e), str(e))
        return None

    async def send(self, message: msgspec.Struct) -> None:
        # One lock keeps media, marks and clears in the order the engine issued them.
        # Uncontended (nearly always) it is taken without a trip through the scheduler.
        async with held(self._send_lock):
            if not self.closed:
                text = p.encode(message).decode()
                try:
                    await self._send({"type": "websocket.send", "text": text})
                except OSError:  # some ASGI servers raise once the peer is gone
                    self.closed = True

    async def close(self, code: int = 1000) -> None:
        async with self._send_lock:
            if not self.closed:
                self.closed = True
                self.close_code = code
                await self._send({"type": "websocket.close", "code": code})


class TwilioLeg:
    """A `CallLeg` over one Twilio media stream."""

    def __init__(
        self,
        info: CallInfo,
        socket: MediaSocket,
        stream_sid: str,
        control: CallControl,
        log: logging.LoggerAdapter,
        *,
        transfers: TransferBook | None = None,
        transfer_action_url: str = "",
        transfer_timeout_s: int = 20,
    ) -> None:
        self.info = info
        self._transfers = transfers if transfers is not None else TransferBook()
        self._transfer_action_url = transfer_action_url
        self._transfer_timeout_s = transfer_timeout_s
        self.stream_sid = stream_sid
        self._socket = socket
        self._control = control
        self._log = log
        self._pending = b""  # outbound audio shorter than one frame
        self._ended = False
        self._ending = "caller"  # the HangUp reason a `stop` will carry

    @property
    def bad_input(self) -> Counter[str]:
        return self._socket.bad.counts

    # ------------------------------------------------------------------ inbound

    def events(self) -> AsyncIterator[LegEvent]:
        return _Events(self)

    async def next_event(self) -> LegEvent | None:
        """The next inbound event; a final HangUp, then None."""
        bad = self._socket.bad
        while not self._ended:
            msg = await self._socket.next_message()
            if msg is None:
                self._ended = True
                self._log.info(
                    "media socket closed without stop (code %s)", self._socket.close_code
                )
                # After our own hang-up or transfer, a closed socket is its expected end.
                return HangUp(reason="socket_closed" if self._ending == "caller" else self._ending)
            if isinstance(msg, p.Connected):
                bad.note("unexpected_connected")
                continue
            if isinstance(msg, p.Start):
                bad.note("duplicate_start")
                continue
            if msg.streamSid != self.stream_sid:
                bad.note("wrong_stream_sid", msg.streamSid)
                continue
            if isinstance(msg, p.Media):
                if not msg.media.payload:
                    bad.note("empty_media")
                    continue
                return AudioIn(msg.media.payload)
            if isinstance(msg, p.Dtmf):
                return DtmfIn(msg.dtmf.digit)
            if isinstance(msg, p.Mark):
                return MarkReached(msg.mark.name)
            self._ended = True  # p.Stop
            return HangUp(reason=self._ending)
        return None

    # ------------------------------------------------------------------ outbound

    async def play(self, audio: bytes) -> None:
        data = self._pending + audio if self._pending else audio
        whole = len(data) - len(data) % FRAME_BYTES
        self._pending = data[whole:]
        for i in range(0, whole, MAX_PIECE):
            await self._send_audio(data[i : min(i + MAX_PIECE, whole)])

    async def mark(self, name: str) -> None:
        if self._pending:  # the mark must come after every byte played before it
            piece, self._pending = self._pending, b""
            await self._send_audio(piece)
        await self._socket.send(p.OutMark(streamSid=self.stream_sid, mark=p.MarkBody(name)))

    async def clear(self) -> None:
        self._pending = b""
        await self._socket.send(p.Clear(streamSid=self.stream_sid))

    async def _send_audio(self, piece: bytes) -> None:
        await self._socket.send(
            p.OutMedia(streamSid=self.stream_sid, media=p.OutMediaBody(payload=piece))
        )

    # ------------------------------------------------------------------ call control

    async def hangup(self) -> None:
        """Hang up through the REST API; if that fails (Twilio's API down, or we ran out
        of time), close the media stream instead: the TwiML has nothing after
        `<Connect>`, so Twilio ends the call when its stream closes. Never raises for a
        failed REST call: the call is ending either way."""
        self._ending = "hangup"
        self._log.info("hanging up through the REST API")
        done = False
        try:
            await self._control.hangup(self.info.provider_call_id)
            done = True
        except ProviderError as e:
            self._log.error("REST hang-up failed (%s): closing the media stream instead", e)
        finally:
            if not done:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await self._socket.close()

    async def transfer(self, number: str) -> None:
        """Redirect the call to a `<Dial>` of `number` (see transfer.py): the stream ends
        now; if nobody answers, the caller comes back on a new stream."""
        self._ending = "transfer"
        self._log.info(
            "transferring the call through the REST API (rings %d s)", self._transfer_timeout_s
        )
        # Expected before the redirect: Twilio may call back before the REST call returns.
        self._transfers.expect(self.info, number, self._transfer_timeout_s)
        await self._control.transfer(
            self.info.provider_call_id,
            number,
            timeout_s=self._transfer_timeout_s,
            action_url=self._transfer_action_url,
        )


class _Events:
    """`async for event in leg.events()` (a class, not a generator: nothing to finalize)."""

    def __init__(self, leg: TwilioLeg) -> None:
        self._leg = leg

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> LegEvent:
        event = await self._leg.next_event()
        if event is None:
            raise StopAsyncIteration
        return event

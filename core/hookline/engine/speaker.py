"""The one owner of the caller's audio: `Speaker.run` is the only code that writes to
the leg (`play`, `mark`, `clear`), one task, in the order the speech was queued.

Agent speech is queued as segments (see `playback`): a cached phrase brings its audio;
a streamed sentence's audio comes later from the call's TTS stream (forwarded with
`tts_event`) and ends with the TTS flush that answers it. The queue is played front to
back, so a phrase queued behind a streamed sentence plays after that sentence's audio
without anyone waiting for it, and barge-in is one call, `interrupt()`: unheard speech
is dropped at once (before the leg returns its pending marks), then the TTS stream and
the leg are cleared in queue order.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import trio

from ..errors import ProviderError
from ..providers import AudioChunk, CallLeg, Flushed, TTSEvent, TTSStream
from .metrics import TurnTiming
from .playback import Playback, Segment

__all__ = ["Speaker", "SpeechFailed"]


class SpeechFailed(ProviderError):
    """The call's speech output (its TTS stream) failed: the response cannot go on and the
    call ends, unlike an LLM failure, which gets the fallback line."""

    def __init__(self, cause: ProviderError, provider: str) -> None:
        super().__init__(str(cause))
        self.provider = cause.provider or provider


@dataclass(eq=False)
class _Phrase:
    seg: Segment
    audio: bytes
    timing: TurnTiming | None


@dataclass(eq=False)
class _Streamed:
    seg: Segment
    timing: TurnTiming | None


class _Clear:
    pass


_Item = _Phrase | _Streamed | _Clear | AudioChunk | Flushed


class Speaker:
    """Plays the call's speech to `leg` in order. Run `run()` in a task that lives as
    long as the leg can be spoken to; everything else only queues."""

    def __init__(self, leg: CallLeg, playback: Playback, tts_name: str) -> None:
        self._leg = leg
        self._playback = playback
        self._tts_name = tts_name
        self._send, self._inbox = trio.open_memory_channel[_Item](math.inf)
        # Speech whose turn has not come: a streamed sentence stays at the front until
        # the flush that ends its audio; only `run()` touches it.
        self._queue: deque[_Phrase | _Streamed] = deque()
        self._tts: TTSStream | None = None
        self._flushes = 0  # flushes sent on the current TTS stream (it numbers them 1, 2, ...)

    # ------------------------------------------------------------ what the call queues

    def attach(self, tts: TTSStream | None) -> None:
        """The call's TTS stream opened (or, with None, closed)."""
        self._tts, self._flushes = tts, 0

    def phrase(self, seg: Segment, audio: bytes, timing: TurnTiming | None = None) -> None:
        """Queue cached audio (a configured phrase): it plays when its turn comes."""
        if not seg.dropped:
            self._send.send_nowait(_Phrase(seg, audio, timing))

    async def stream(self, seg: Segment, timing: TurnTiming | None = None) -> None:
        """Send a sentence through the TTS stream; its audio plays when its turn comes.
        A TTS failure raises `SpeechFailed`."""
        tts = self._tts
        if tts is None:  # the stream is closed: this will never be heard
            self._playback.drop(seg)
        if seg.dropped:
            return
        self._flushes += 1
        seg.flush_seq = self._flushes
        self._send.send_nowait(_Streamed(seg, timing))
        try:
            await tts.speak(seg.text)
            await tts.flush()
        except ProviderError as e:
            raise SpeechFailed(e, self._tts_name) from e
        except BaseException:
            # Cancelled before its flush was surely sent: it may never be answered.
            self._playback.drop(seg)
            raise

    def tts_event(self, event: TTSEvent) -> None:
        """Audio or a flush answer from the TTS stream, in the order it came."""
        self._send.send_nowait(event)

    async def interrupt(self) -> list[Segment]:
        """Barge-in: drop every unheard segment, clear the TTS stream and the leg.
        Returns the dropped segments, oldest first; what was heard stays heard."""
        dropped = self._playback.drop_unheard()
        self._send.send_nowait(_Clear())
        tts = self._tts
        if tts is not None:
            try:
                await tts.clear()
            except ProviderError as e:
                raise SpeechFailed(e, self._tts_name) from e
        return dropped

    async def until_quiet(self) -> None:
        """Until no agent speech is queued or playing (a filler only fills silence)."""
        while self._playback.speaking:
            await self._playback.wait_changed()

    # ------------------------------------------------------------ the one writer

    async def run(self) -> None:
        async for item in self._inbox:
            if isinstance(item, AudioChunk):
                await self._tts_audio(item.audio)
            elif isinstance(item, Flushed):
                await self._flushed(item.sequence)
            elif isinstance(item, _Clear):
                self._queue.clear()
                if not self._playback.closed:
                    await self._leg.clear()
            else:
                self._queue.append(item)
            await self._play_phrases()

    async def _play_phrases(self) -> None:
        while self._queue and isinstance(self._queue[0], _Phrase):
            item = self._queue.popleft()
            if item.seg.dropped or self._playback.closed:
                continue
            timing = item.timing
            first = timing is not None and timing.first_audio is None
            if timing is not None and first and timing.first_sentence is None:
                timing.first_sentence = trio.current_time()
            await self._leg.play(item.audio)
            if timing is not None and first:
                # After play(): voice-to-voice ends when the audio has left for the
                # caller (written to the media socket), not when we began to send it.
                timing.first_audio = trio.current_time()
                timing.first_audio_cached = True
            await self._leg.mark(item.seg.mark)

    async def _tts_audio(self, audio: bytes) -> None:
        head = self._queue[0] if self._queue else None
        # Audio of dropped speech (it was still on its way when the caller barged in).
        if not isinstance(head, _Streamed) or head.seg.dropped or not audio:
            return
        if self._playback.closed:
            return
        timing = head.timing
        if timing is not None and timing.tts_request is not None and timing.tts_first_byte is None:
            timing.tts_first_byte = trio.current_time()
        await self._leg.play(audio)
        if timing is not None and timing.first_audio is None:
            timing.first_audio = trio.current_time()  # it has left (see _play_phrases)

    async def _flushed(self, sequence: int) -> None:
        # Flushes are answered in order; a merged answer ends several sentences at once.
        while self._queue and isinstance(self._queue[0], _Streamed):
            seg = self._queue[0].seg
            if seg.flush_seq is None or seg.flush_seq > sequence:
                break
            self._queue.popleft()
            if not seg.dropped and not self._playback.closed:
                await self._leg.mark(seg.mark)

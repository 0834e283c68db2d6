"""In-process scripted providers: a caller on a phone leg, STT, LLM and TTS.

They implement the provider Protocols with scriptable timing and faults, and run under
trio's MockClock (`autojump_threshold=0`), so a minute-long call takes milliseconds of
real time. Audio is real mu-law: the caller "speaks" a tone, the STT detects it by
energy and reports the words its script says were spoken (it cannot recognise speech).

    stt = ScriptedSTT()
    leg = ScriptedLeg(call_info(), [Say("I need an oil change"), Pause(3), HangUpStep()], stt)
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import msgspec
import trio
import trio.lowlevel

from ..audio import FRAME_BYTES, FRAME_SECONDS, SAMPLE_RATE, AudioFormat, rms_mulaw, tone_mulaw
from ..errors import ProviderAuthError, ProviderError, ProviderUnavailable
from ..providers import (
    AudioChunk,
    AudioIn,
    CallInfo,
    DtmfIn,
    Flushed,
    HangUp,
    LegEvent,
    MarkReached,
    Message,
    SpeechStarted,
    STTEvent,
    TextDelta,
    ToolCallRequest,
    ToolSchema,
    Transcript,
    TTSEvent,
    Usage,
    UtteranceEnd,
)

__all__ = [
    "HangUpStep",
    "Pause",
    "Press",
    "Reply",
    "Say",
    "ScriptedLLM",
    "ScriptedLeg",
    "ScriptedSTT",
    "ScriptedTTS",
    "WaitForAgent",
    "call_info",
]

_ids = itertools.count(1)
SPEECH_LEVEL = 500.0  # mean |sample| above this is speech
_TONE = tone_mulaw(FRAME_SECONDS)
_SILENCE = b"\xff" * FRAME_BYTES


def call_info(**kw: Any) -> CallInfo:
    n = next(_ids)
    defaults = dict(
        call_id=f"call{n:04d}", provider_call_id=f"CA{n:032d}", from_number="+15551230000",
        to_number="+15559870000",
    )  # fmt: skip
    defaults.update(kw)
    return CallInfo(**defaults)


class _Events:
    """A provider stream's outbound events; `fail(exc)` makes iteration raise it."""

    def __init__(self) -> None:
        self._send, self._recv = trio.open_memory_channel[Any](math.inf)

    def put(self, event: Any) -> None:
        try:
            self._send.send_nowait(event)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def fail(self, exc: BaseException) -> None:
        self.put(_Raise(exc))

    def close(self) -> None:
        self._send.close()

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> Any:
        try:
            item = await self._recv.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
        if isinstance(item, _Raise):
            raise item.exc
        return item


@dataclass
class _Raise:
    exc: BaseException


# =========================================================================== the caller


@dataclass
class Say:
    """The caller speaks `text` for `seconds` (default: 0.3 s a word)."""

    text: str
    seconds: float | None = None

    def duration(self, word_s: float) -> float:
        return self.seconds if self.seconds is not None else word_s * max(1, len(self.text.split()))


@dataclass
class Pause:
    seconds: float


@dataclass
class Press:
    digit: str


@dataclass
class WaitForAgent:
    """Wait (in silence) until the agent has said something and gone quiet again."""

    timeout: float = 30.0
    settle: float = 0.3


@dataclass
class HangUpStep:
    pass


Step = Say | Pause | Press | WaitForAgent | HangUpStep


@dataclass
class _Played:
    t: float
    audio: bytes


class ScriptedLeg:
    """A phone leg with a scripted caller, playing agent audio back in real time.

    It records everything: audio received (with times), marks, clears, hang-up, transfer.
    Use it as `async with leg.running():` around the call, or let `ScriptedCall` do it.
    """

    def __init__(
        self,
        info: CallInfo,
        script: Sequence[Step],
        stt: ScriptedSTT | None = None,
        *,
        word_s: float = 0.3,
        after_script: float = 60.0,
    ) -> None:
        self.info = info
        self.script = list(script)
        self.stt = stt
        self.word_s = word_s
        self.after_script = after_script  # silence after the script before hanging up
        self._events = _Events()
        self._queue: deque[bytes | str] = deque()  # audio, or mark names
        self._queue_changed = trio.Event()
        self._cleared = trio.Event()
        self.started_at: float | None = None
        self.received: list[_Played] = []
        self.marks_sent: list[str] = []
        self.marks_returned: list[tuple[float, str, bool]] = []  # (t, name, played)
        self.clears: list[float] = []
        self.played_bytes = 0
        self.hung_up_at: float | None = None
        self.caller_hung_up = False
        self.caller_hung_up_at: float | None = None
        self.transferred_to: str | None = None
        self.said_at: list[tuple[float, float, str]] = []  # (start, end, text)
        self._playing = False
        self._ended = trio.Event()
        self._next_frame_at: float | None = None  # the caller's audio clock (_send_audio)

    # ---- CallLeg

    async def events(self) -> AsyncIterator[LegEvent]:
        async for event in self._events:
            yield event

    async def play(self, audio: bytes) -> None:
        self._check_open()
        self.received.append(_Played(trio.current_time(), audio))
        self._queue.append(audio)
        self._poke()

    async def mark(self, name: str) -> None:
        self._check_open()
        self.marks_sent.append(name)
        self._queue.append(name)
        self._poke()

    async def clear(self) -> None:
        self._check_open()
        self.clears.append(trio.current_time())
        # Like Twilio: drop the buffered audio, return every pending mark at once.
        while self._queue:
            item = self._queue.popleft()
            if isinstance(item, str):
                self.marks_returned.append((trio.current_time(), item, False))
                self._events.put(MarkReached(item))
        self._cleared.set()
        self._cleared = trio.Event()
        self._poke()

    async def hangup(self) -> None:
        if self.hung_up_at is None:
            self.hung_up_at = trio.current_time()
        self._finish()

    async def transfer(self, number: str) -> None:
        self.transferred_to = number
        self._finish()

    # ---- behaviour

    def caller_hangs_up(self) -> None:
        """The caller hangs up now (what a `HangUpStep` does)."""
        if not self._ended.is_set():
            self.caller_hung_up = True
            self.caller_hung_up_at = trio.current_time()
            self._events.put(HangUp("caller"))
            self._finish()

    def _check_open(self) -> None:
        if self._ended.is_set():
            raise ProviderUnavailable("the call has ended", provider="telephony/scripted")

    def _poke(self) -> None:
        self._queue_changed.set()
        self._queue_changed = trio.Event()

    def _finish(self) -> None:
        self._ended.set()
        self._events.close()

    @property
    def agent_audio_seconds(self) -> float:
        return self.played_bytes / SAMPLE_RATE

    @property
    def first_audio_at(self) -> float | None:
        return self.received[0].t if self.received else None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ScriptedLeg]:
        async with trio.open_nursery() as nursery:
            self.started_at = trio.current_time()
            nursery.start_soon(self._player)
            nursery.start_soon(self._caller)
            try:
                yield self
            finally:
                nursery.cancel_scope.cancel()

    async def _player(self) -> None:
        """Play queued agent audio at 8000 bytes/s; a mark returns when reached."""
        while True:
            if not self._queue:
                await self._queue_changed.wait()
                continue
            item = self._queue.popleft()
            if isinstance(item, str):
                self.marks_returned.append((trio.current_time(), item, True))
                self._events.put(MarkReached(item))
                continue
            cleared = self._cleared
            self._playing = True
            for i in range(0, len(item), FRAME_BYTES):
                with trio.move_on_after(len(item[i : i + FRAME_BYTES]) / SAMPLE_RATE):
                    await cleared.wait()
                if cleared.is_set():
                    break
                self.played_bytes += len(item[i : i + FRAME_BYTES])
            self._playing = False

    async def _caller(self) -> None:
        for step in self.script:
            if self._ended.is_set():
                return
            if isinstance(step, Say):
                if self.stt is not None:
                    self.stt.expect(self.info.call_id, step.text)
                start = trio.current_time()
                await self._send_audio(_TONE, step.duration(self.word_s))
                self.said_at.append((start, trio.current_time(), step.text))
            elif isinstance(step, Pause):
                await self._send_audio(_SILENCE, step.seconds)
            elif isinstance(step, Press):
                self._events.put(DtmfIn(step.digit))
                await self._send_audio(_SILENCE, 0.1)
            elif isinstance(step, WaitForAgent):
                await self._wait_for_agent(step)
            elif isinstance(step, HangUpStep):
                self.caller_hangs_up()
                return
        await self._send_audio(_SILENCE, self.after_script)
        self.caller_hangs_up()

    async def _send_audio(self, frame: bytes, seconds: float) -> None:
        # On the caller's clock, as a phone's audio is: one frame every 20 ms from the
        # first, and those that came due while the trio thread was blocked arrive at once
        # after it, as from a socket's buffer.
        for _ in range(max(1, round(seconds / FRAME_SECONDS))):
            if self._ended.is_set():
                return
            self._events.put(AudioIn(frame))
            if self._next_frame_at is None:
                self._next_frame_at = trio.current_time()
            self._next_frame_at += FRAME_SECONDS
            await trio.sleep_until(self._next_frame_at)

    async def _wait_for_agent(self, step: WaitForAgent) -> None:
        """Until the agent has said something since the caller last spoke and is quiet."""
        since = self.said_at[-1][1] if self.said_at else -math.inf
        deadline = trio.current_time() + step.timeout
        while trio.current_time() < deadline and not self._ended.is_set():
            spoke = any(p.t >= since for p in self.received)
            if spoke and not self._queue and not self._playing:
                await self._send_audio(_SILENCE, step.settle)
                if not self._queue and not self._playing:
                    return
            else:
                await self._send_audio(_SILENCE, FRAME_SECONDS)


# =========================================================================== STT


class ScriptedSTT:
    """STT that detects speech by energy and reports scripted words.

    Emits SpeechStarted at onset, an interim result per word revealed (one every
    `word_s` of speech), a final with speech_final after `endpointing_s` of silence and
    UtteranceEnd after `utterance_end_s`. Faults: `auth_fail`, `fail_after_s` (the stream
    breaks after that much audio), `final_delay_s`.
    """

    name = "stt/scripted"

    def __init__(
        self,
        *,
        word_s: float = 0.3,
        endpointing_s: float = 0.3,
        utterance_end_s: float = 1.0,
        final_delay_s: float = 0.0,
        auth_fail: bool = False,
        fail_after_s: float | None = None,
    ) -> None:
        self.word_s = word_s
        self.endpointing_s = endpointing_s
        self.utterance_end_s = utterance_end_s
        self.final_delay_s = final_delay_s
        self.auth_fail = auth_fail
        self.fail_after_s = fail_after_s
        self._expected: dict[str, deque[str]] = {}
        self.streams_opened = 0
        self.streams_closed = 0
        self.finalize_calls = 0

    def expect(self, call_id: str, text: str) -> None:
        """The next utterance on this call will be recognised as `text`."""
        self._expected.setdefault(call_id, deque()).append(text)

    @asynccontextmanager
    async def open(self, fmt: AudioFormat, call: CallInfo) -> AsyncIterator[_ScriptedSTTStream]:
        if self.auth_fail:
            raise ProviderAuthError("invalid credentials", provider=self.name)
        self.streams_opened += 1
        stream = _ScriptedSTTStream(self, self._expected.setdefault(call.call_id, deque()))
        async with trio.open_nursery() as nursery:
            stream._nursery = nursery
            try:
                yield stream
            finally:
                self.streams_closed += 1
                stream._closed = True
                stream._events.close()
                nursery.cancel_scope.cancel()


class _ScriptedSTTStream:
    def __init__(self, stt: ScriptedSTT, expected: deque[str]) -> None:
        self.stt = stt
        self._expected = expected
        self._events = _Events()
        self._nursery: trio.Nursery | None = None
        self._pos = 0.0  # seconds of audio received
        self._speech_start: float | None = None
        self._last_voice: float | None = None
        self._revealed = 0
        self._final_sent_at: float | None = None  # audio time of the last final's end
        self._closed = False  # then send/finalize are no-ops (the STTStream contract)

    async def send(self, audio: bytes) -> None:
        if not audio:
            raise ValueError("empty audio frame")
        await trio.lowlevel.checkpoint()
        if self._closed:
            return
        start = self._pos
        self._pos += len(audio) / SAMPLE_RATE
        if self.stt.fail_after_s is not None and self._pos >= self.stt.fail_after_s:
            self._events.fail(ProviderUnavailable("connection dropped", provider=self.stt.name))
            return
        if rms_mulaw(audio) > SPEECH_LEVEL:
            self._voice(start)
        elif self._speech_start is not None and self._last_voice is not None:
            if self._pos - self._last_voice >= self.stt.endpointing_s:
                self._final(speech_final=True)
        elif self._final_sent_at is not None:
            if self._pos - self._final_sent_at >= self.stt.utterance_end_s:
                self._events.put(UtteranceEnd(last_word_end=self._final_sent_at))
                self._final_sent_at = None

    def _voice(self, start: float) -> None:
        if self._speech_start is None:
            self._speech_start = start
            self._revealed = 0
            self._final_sent_at = None
            self._events.put(SpeechStarted(at=start))
        self._last_voice = self._pos
        words = self._expected[0].split() if self._expected else []
        due = min(len(words), 1 + int((self._pos - self._speech_start) / self.stt.word_s))
        if due > self._revealed:
            self._revealed = due
            text = " ".join(words[:due])
            self._events.put(Transcript(text, False, start=self._speech_start, end=self._pos))

    def _final(self, speech_final: bool) -> None:
        text = self._expected.popleft() if self._expected else ""
        start, end = self._speech_start or 0.0, self._last_voice or self._pos
        self._speech_start = None
        self._last_voice = None
        self._final_sent_at = end
        event = Transcript(text, is_final=True, speech_final=speech_final, start=start, end=end)
        if self.stt.final_delay_s and self._nursery is not None:
            self._nursery.start_soon(self._later, self.stt.final_delay_s, event)
        else:
            self._events.put(event)

    async def _later(self, delay: float, event: STTEvent) -> None:
        await trio.sleep(delay)
        self._events.put(event)

    async def finalize(self) -> None:
        await trio.lowlevel.checkpoint()
        if self._closed:
            return
        self.stt.finalize_calls += 1
        if self._speech_start is not None:
            self._final(speech_final=False)

    def __aiter__(self) -> AsyncIterator[STTEvent]:
        return self._events


# =========================================================================== LLM


@dataclass
class Reply:
    """One scripted LLM answer: text and/or tool calls, or an error to raise.

    tool_calls: (name, JSON arguments) pairs. `error` is raised after `error_after`
    text tokens (0: before anything).
    """

    text: str = ""
    tool_calls: Sequence[tuple[str, str]] = ()
    first_token_s: float = 0.2
    tokens_per_s: float = 40.0
    error: ProviderError | None = None
    error_after: int = 0
    prompt_tokens: int = 100
    completion_tokens: int | None = None


class ScriptedLLM:
    """Answers each request with the next `Reply` (or `respond(messages)`), streamed word
    by word. Records every request and how many streams were cancelled mid-way."""

    name = "llm/scripted"

    def __init__(
        self,
        replies: Sequence[Reply | str] = (),
        respond: Callable[[list[Message]], Reply | str] | None = None,
    ) -> None:
        self.replies: deque[Reply | str] = deque(replies)
        self.respond = respond
        self.requests: list[list[Message]] = []
        self.tools_seen: list[list[str]] = []
        self.cancelled = 0
        self.completed = 0
        self._call_ids = itertools.count(1)

    def _next(self, messages: list[Message]) -> Reply:
        if self.replies:
            reply = self.replies.popleft()
        elif self.respond is not None:
            reply = self.respond(messages)
        else:
            reply = Reply("Okay.")
        return Reply(reply) if isinstance(reply, str) else reply

    @asynccontextmanager
    async def stream(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSchema],
        call: CallInfo | None = None,
    ) -> AsyncIterator[AsyncIterator[Any]]:
        snapshot = msgspec.convert(msgspec.to_builtins(list(messages)), list[Message])
        self.requests.append(snapshot)
        self.tools_seen.append([t.name for t in tools])
        reply = self._next(snapshot)
        finished = False

        async def events() -> AsyncIterator[Any]:
            nonlocal finished
            await trio.sleep(reply.first_token_s)
            words = reply.text.split(" ") if reply.text else []
            for i, word in enumerate(words):
                if reply.error is not None and i == reply.error_after:
                    raise reply.error
                yield TextDelta(word if i == len(words) - 1 else word + " ")
                await trio.sleep(1 / reply.tokens_per_s)
            if reply.error is not None and reply.error_after >= len(words):
                raise reply.error
            for name, args in reply.tool_calls:
                yield ToolCallRequest(id=f"call_{next(self._call_ids)}", name=name, arguments=args)
            yield Usage(
                prompt_tokens=reply.prompt_tokens,
                completion_tokens=reply.completion_tokens or len(words) + 5 * len(reply.tool_calls),
            )
            finished = True

        gen = events()
        try:
            yield gen
        finally:
            await gen.aclose()
            if finished:
                self.completed += 1
            else:
                self.cancelled += 1


# =========================================================================== TTS


class ScriptedTTS:
    """Turns flushed text into mu-law audio (`chars_per_s` of speech) after `ttfb_s`.

    Records every text synthesized (streamed and REST). Faults: `auth_fail`,
    `fail_after_flushes` (the stream breaks on that flush).
    """

    name = "tts/scripted"

    def __init__(
        self,
        *,
        ttfb_s: float = 0.1,
        chars_per_s: float = 15.0,
        chunk_s: float = 0.1,
        auth_fail: bool = False,
        fail_after_flushes: int | None = None,
    ) -> None:
        self.ttfb_s = ttfb_s
        self.chars_per_s = chars_per_s
        self.chunk_s = chunk_s
        self.auth_fail = auth_fail
        self.fail_after_flushes = fail_after_flushes
        self.synthesized: Counter[str] = Counter()  # REST synthesize calls per text
        self.spoken: list[str] = []  # texts whose streamed audio was completed
        self.streams_opened = 0

    def audio_for(self, text: str) -> bytes:
        seconds = max(0.2, len(text) / self.chars_per_s)
        return tone_mulaw(FRAME_SECONDS, hz=440) * round(seconds / FRAME_SECONDS)

    async def synthesize(self, text: str, fmt: AudioFormat) -> bytes:
        if self.auth_fail:
            raise ProviderAuthError("invalid credentials", provider=self.name)
        await trio.sleep(self.ttfb_s)
        self.synthesized[text] += 1
        return self.audio_for(text)

    @asynccontextmanager
    async def open(self, fmt: AudioFormat, call: CallInfo) -> AsyncIterator[_ScriptedTTSStream]:
        if self.auth_fail:
            raise ProviderAuthError("invalid credentials", provider=self.name)
        self.streams_opened += 1
        stream = _ScriptedTTSStream(self)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream._worker)
            try:
                yield stream
            finally:
                stream._events.close()
                nursery.cancel_scope.cancel()


class _ScriptedTTSStream:
    def __init__(self, tts: ScriptedTTS) -> None:
        self.tts = tts
        self._events = _Events()
        self._text = ""
        self._jobs_send, self._jobs = trio.open_memory_channel[tuple[int, str]](math.inf)
        self._generation = 0
        self._job_scope: trio.CancelScope | None = None

    async def speak(self, text: str) -> None:
        await trio.lowlevel.checkpoint()
        self._text += text

    async def flush(self) -> None:
        await trio.lowlevel.checkpoint()
        text, self._text = self._text, ""
        self._jobs_send.send_nowait((self._generation, text))

    async def clear(self) -> None:
        await trio.lowlevel.checkpoint()
        self._text = ""
        self._generation += 1  # queued jobs of older generations are skipped
        if self._job_scope is not None:
            self._job_scope.cancel()

    async def _worker(self) -> None:
        seq = 0
        async for generation, text in self._jobs:
            seq += 1
            if generation != self._generation:
                continue
            if self.tts.fail_after_flushes is not None and seq >= self.tts.fail_after_flushes:
                self._events.fail(ProviderUnavailable("socket closed", provider=self.tts.name))
                return
            with trio.CancelScope() as self._job_scope:
                await trio.sleep(self.tts.ttfb_s)
                audio = self.tts.audio_for(text) if text else b""
                step = round(self.tts.chunk_s * SAMPLE_RATE)
                for i in range(0, len(audio), step):
                    self._events.put(AudioChunk(audio[i : i + step]))
                    await trio.lowlevel.checkpoint()
                self.tts.spoken.append(text)
                self._events.put(Flushed(seq))
            self._job_scope = None

    def __aiter__(self) -> AsyncIterator[TTSEvent]:
        return self._events

"""The provider interfaces: what a telephony, STT, LLM or TTS plugin implements.

A plugin returns `ProviderSpec`s from `hookline_providers()`; the runtime calls the chosen
spec's `create(settings, ctx)` (ctx: a `hookline.ProviderContext`) once per process and
uses the returned object for every call. Everything per call (a media leg, an STT
stream, an LLM response, a TTS stream) is opened from that object and closed when the
call or response ends.

Timing: every timestamp a provider reports about audio is in seconds of *call audio*,
counted from the first byte sent on the stream (not wall time). The engine maps audio
time to its monotonic clock because it knows when it handed each frame over.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import msgspec

from .audio import AudioFormat

if TYPE_CHECKING:
    from .context import ProviderContext

__all__ = [
    "LLM",
    "STT",
    "TTS",
    "ASGIApp",
    "AudioChunk",
    "AudioIn",
    "CallHandler",
    "CallInfo",
    "CallLeg",
    "DtmfIn",
    "Flushed",
    "HangUp",
    "LLMEvent",
    "LegEvent",
    "MarkReached",
    "Message",
    "ProviderKind",
    "ProviderSpec",
    "Route",
    "STTEvent",
    "STTStream",
    "SpeechStarted",
    "TTSEvent",
    "TTSStream",
    "Telephony",
    "TextDelta",
    "ToolCallRequest",
    "ToolSchema",
    "Transcript",
    "Usage",
    "UtteranceEnd",
    "new_call_id",
]

ProviderKind = Literal["telephony", "stt", "llm", "tts"]


@dataclass(frozen=True)
class ProviderSpec:
    """One provider a plugin offers.

    kind: which slot it fills; name: what `[providers]` in the config calls it
    ("deepgram"); settings: the msgspec Struct its config section decodes into (use
    `forbid_unknown_fields=True`; name secrets with `*_env` fields); create: builds the
    provider from its decoded settings and a `ProviderContext` (secrets, agent and
    policy settings, paths, thread limiter, logger, `on_close`), once per process.
    """

    kind: ProviderKind
    name: str
    settings: type[msgspec.Struct]
    create: Callable[[Any, ProviderContext], Any]


# --------------------------------------------------------------------------- telephony


def new_call_id() -> str:
    """A fresh hookline call id, for the `CallInfo` a telephony provider builds."""
    return uuid.uuid4().hex[:16]


class CallInfo(msgspec.Struct, frozen=True):
    """Who is calling whom. `call_id` is hookline's own id (`new_call_id()`); the rest
    comes from telephony."""

    call_id: str
    provider_call_id: str = ""
    from_number: str = ""
    to_number: str = ""
    parameters: dict[str, str] = {}


class AudioIn(msgspec.Struct, frozen=True):
    """Caller audio: mu-law bytes, usually one 20 ms frame."""

    audio: bytes


class DtmfIn(msgspec.Struct, frozen=True):
    digit: str


class MarkReached(msgspec.Struct, frozen=True):
    """All audio played before `mark(name)` has been heard (or dropped by a clear)."""

    name: str


class HangUp(msgspec.Struct, frozen=True):
    """The caller's side ended. `reason` is short and machine-readable ("caller", "stop")."""

    reason: str = "caller"


LegEvent = AudioIn | DtmfIn | MarkReached | HangUp


@runtime_checkable
class CallLeg(Protocol):
    """One live phone call as the engine sees it.

    `events()` yields inbound events until the call ends. When the caller hangs up, a
    final `HangUp` comes and the iteration stops; after our own `hangup()` or
    `transfer()` the iteration stops too (a `HangUp` before that is optional). A leg that
    breaks raises a ProviderError from the iteration.

    Outbound calls never wait for playback (the call keeps listening while audio plays):
    `play` queues audio and returns; `mark(name)` queues a marker that comes back as
    `MarkReached(name)` once everything queued before it was played, marks in the order
    they were queued; `clear` drops the queued audio, and every mark still pending comes
    back at once as `MarkReached` (marks are never lost, so whoever waits on one is
    released). `hookline.testing.conformance.CallLegConformance` checks all of this.
    """

    info: CallInfo

    def events(self) -> AsyncIterator[LegEvent]: ...
    async def play(self, audio: bytes) -> None: ...
    async def mark(self, name: str) -> None: ...
    async def clear(self) -> None: ...
    async def hangup(self) -> None: ...
    async def transfer(self, number: str) -> None: ...


ASGIApp = Callable[
    [dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]
]


@dataclass(frozen=True)
class Route:
    """An ASGI app the server mounts at `path` (exact match)."""

    path: str
    app: ASGIApp


class CallHandler(Protocol):
    """What the runtime offers a telephony provider."""

    def try_admit(self) -> bool:
        """Reserve a call slot; False when at max_concurrent_calls or draining."""
        ...

    def release(self) -> None:
        """Give back a slot from `try_admit` whose call never started."""
        ...

    async def run_call(self, leg: CallLeg) -> None:
        """Run the whole call on an admitted leg; returns when the call ended."""
        ...

    def record_rejected(self, info: CallInfo, reason: str) -> None:
        """Record an authenticated call that was refused before it started (busy)."""
        ...

    def count_refused(self, reason: str) -> None:
        """Count a request refused as untrusted (bad signature, replay): never recorded."""
        ...

    def record_status(self, provider_call_id: str, fields: Mapping[str, str]) -> None:
        """Record a telephony status callback for the call with this provider id."""
        ...

    def record_recording(
        self,
        provider_call_id: str,
        *,
        recording_sid: str,
        status: str,
        duration_s: float | None = None,
        url: str = "",
    ) -> None:
        """Record a (signature-checked) recording callback against the call with this
        provider id, also after the call ended (the `recordings` table)."""
        ...


@runtime_checkable
class Telephony(Protocol):
    """Contributes the HTTP/WebSocket routes that receive calls and hands each to `handler`."""

    def routes(self, handler: CallHandler) -> Sequence[Route]: ...


# --------------------------------------------------------------------------- speech-to-text


class Transcript(msgspec.Struct, frozen=True):
    """Recognised text. Interim results (`is_final=False`) may still change; finals will not.

    `speech_final` means the provider thinks the speaker finished (endpointing).
    `start`/`end` are seconds of call audio.
    """

    text: str
    is_final: bool
    speech_final: bool = False
    start: float = 0.0
    end: float = 0.0
    confidence: float = 1.0


class SpeechStarted(msgspec.Struct, frozen=True):
    at: float


class UtteranceEnd(msgspec.Struct, frozen=True):
    """A gap after the last word: the user's turn is over even without `speech_final`."""

    last_word_end: float


STTEvent = Transcript | SpeechStarted | UtteranceEnd


@runtime_checkable
class STTStream(Protocol):
    """Caller audio in, transcript events out (`async for event in stream`).

    `send` and `finalize` never wait for the network. Once the stream is closed (its
    `open` block exited) or has failed, both are no-ops: the audio is dropped and nothing
    is raised, because the caller's audio keeps arriving while a call winds down. A
    failure is raised once, from iteration.
    """

    async def send(self, audio: bytes) -> None: ...
    async def finalize(self) -> None: ...
    def __aiter__(self) -> AsyncIterator[STTEvent]: ...


@runtime_checkable
class STT(Protocol):
    def open(self, fmt: AudioFormat, call: CallInfo) -> AbstractAsyncContextManager[STTStream]:
        """Open a stream for one call; raise ProviderAuthError at once for bad credentials."""
        ...


# --------------------------------------------------------------------------- LLM


class ToolCallRequest(msgspec.Struct, frozen=True):
    """A complete tool call: `arguments` is the whole JSON text the model produced."""

    id: str
    name: str
    arguments: str


class Message(msgspec.Struct, omit_defaults=True):
    """One chat message in the OpenAI shape, which every LLM provider maps from."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[ToolCallRequest] = []
    tool_call_id: str | None = None
    name: str | None = None


class ToolSchema(msgspec.Struct, frozen=True):
    """What the LLM is told about a tool. `parameters` is a JSON schema object."""

    name: str
    description: str
    parameters: dict[str, Any]
    strict: bool = False


class TextDelta(msgspec.Struct, frozen=True):
    text: str


class Usage(msgspec.Struct, frozen=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


LLMEvent = TextDelta | ToolCallRequest | Usage


@runtime_checkable
class LLM(Protocol):
    """A provider may also offer `async def verify()` (checked by `hookline check --online`),
    `async def prepare()` (awaited once by `Runtime.start()`, before any call: build the
    HTTP client there, off the trio thread, not at the first response) and `async def
    aclose()` (called once when the runtime shuts down)."""

    def stream(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSchema],
        call: CallInfo | None = None,
    ) -> AbstractAsyncContextManager[AsyncIterator[LLMEvent]]:
        """One response: `async with llm.stream(...) as events: async for ev in events`.

        `call` says which call the response is for (for the provider's logs); it is None
        outside a call (`hookline chat`, conformance suites).

        Yields text deltas as they arrive, each tool call once complete, and usage last.
        Leaving the context early (barge-in) must close the underlying stream.
        """
        ...


# --------------------------------------------------------------------------- text-to-speech


class AudioChunk(msgspec.Struct, frozen=True):
    audio: bytes


class Flushed(msgspec.Struct, frozen=True):
    """All audio for the text spoken before flush number `sequence` (1, 2, ...) was sent.

    Each `flush()` is answered by exactly one `Flushed`, in order; a provider may merge
    consecutive flushes (rate limits) and answer them together after the merged audio.
    After `clear()`, flushes not yet answered are never answered.
    """

    sequence: int


TTSEvent = AudioChunk | Flushed


@runtime_checkable
class TTSStream(Protocol):
    async def speak(self, text: str) -> None: ...
    async def flush(self) -> None: ...
    async def clear(self) -> None: ...
    def __aiter__(self) -> AsyncIterator[TTSEvent]: ...


@runtime_checkable
class TTS(Protocol):
    def open(self, fmt: AudioFormat, call: CallInfo) -> AbstractAsyncContextManager[TTSStream]:
        """Open a stream for one call and connect at once (warm), so the first sentence
        does not wait for a handshake; raise ProviderAuthError at once for bad credentials."""
        ...

    async def synthesize(self, text: str, fmt: AudioFormat) -> bytes:
        """The whole phrase at once (for the greeting and fillers cached at start-up)."""
        ...

"""Typed events a call emits to observers (`hookline_call_event`).

Every event carries `t`, the `trio.current_time()` at which it happened (monotonic
seconds), and most carry the turn index it belongs to. Events are msgspec Structs
tagged by class name, so a sink can encode any of them with one `msgspec.json.encode`
and decode them back with `msgspec.json.decode(data, type=CallEvent)`.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "AgentSpoke",
    "BargeIn",
    "CallEvent",
    "CallRecord",
    "DtmfReceived",
    "ProviderFailed",
    "RecordingCompleted",
    "Reprompted",
    "TelephonyStatus",
    "ToolCallFinished",
    "ToolCallRecord",
    "ToolCallStarted",
    "TurnMetrics",
    "TurnRecord",
    "UsageReported",
    "UserSpeechStarted",
    "UserTurnEnded",
]


class _Event(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    t: float


class UserSpeechStarted(_Event):
    turn: int


class UserTurnEnded(_Event):
    """The user's turn is over: `text` is the joined finals; `speech_end` the monotonic
    time the caller stopped speaking (from STT word timings)."""

    turn: int
    text: str
    speech_end: float
    reason: str  # "speech_final" | "utterance_end" | "dtmf"


class AgentSpoke(_Event):
    """One sentence the agent said, and whether the caller heard all of it."""

    turn: int
    text: str
    heard: bool


class BargeIn(_Event):
    """The caller spoke over the agent; `heard_text` is what reached them before."""

    turn: int
    heard_text: str
    interim_text: str


class ToolCallStarted(_Event):
    turn: int
    call_id: str
    tool: str
    arguments: str


class ToolCallFinished(_Event):
    turn: int
    call_id: str
    tool: str
    ok: bool
    result: str
    error: str | None
    latency_ms: float


class DtmfReceived(_Event):
    turn: int
    digit: str


class Reprompted(_Event):
    turn: int
    count: int


class UsageReported(_Event):
    """Usage attributable to one turn. Units: tokens, characters, seconds."""

    turn: int
    provider: str  # "llm/openai", "tts/deepgram", "stt/deepgram"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    characters: int = 0
    seconds: float = 0.0


class TurnMetrics(_Event):
    """Latencies of one agent turn in milliseconds; a metric that did not happen is absent.

    Keys: stt_final, end_of_turn_delay, llm_first_token, tts_first_byte, tool,
    voice_to_voice, runtime_overhead.
    """

    turn: int
    metrics: dict[str, float]


class ProviderFailed(_Event):
    provider: str
    error: str
    fatal: bool


class TelephonyStatus(_Event):
    """A status callback from telephony (Twilio's call or stream status)."""

    fields: dict[str, str]


class RecordingCompleted(_Event):
    """The telephony provider reports a finished recording of the call (Twilio's
    recording status callback, signature checked). `duration_s` is None when unknown."""

    recording_sid: str
    status: str
    duration_s: float | None = None
    url: str = ""


CallEvent = (
    UserSpeechStarted
    | UserTurnEnded
    | AgentSpoke
    | BargeIn
    | ToolCallStarted
    | ToolCallFinished
    | DtmfReceived
    | Reprompted
    | UsageReported
    | TurnMetrics
    | ProviderFailed
    | TelephonyStatus
    | RecordingCompleted
)


class ToolCallRecord(msgspec.Struct, kw_only=True):
    call_id: str
    tool: str
    arguments: str
    ok: bool
    result: str
    error: str | None
    latency_ms: float


class TurnRecord(msgspec.Struct, kw_only=True):
    """One turn of the conversation.

    For the agent, `text` is what it said and `heard_text` what the caller heard. They
    differ when the caller barged in (`interrupted` is then true) or when the call ended
    mid-sentence (a hang-up, or an apology cutting in after a provider failure).
    `started`/`ended` are wall-clock UNIX seconds.
    """

    index: int
    role: str  # "user" | "agent"
    text: str
    heard_text: str | None = None
    interrupted: bool = False
    started: float
    ended: float
    metrics: dict[str, float] = {}
    tool_calls: list[ToolCallRecord] = []


class CallRecord(msgspec.Struct, kw_only=True):
    """The whole story of one call, handed to `hookline_call_ended`.

    `end_reason`: "caller_hangup", "agent_hangup", "transferred", "silence",
    "max_duration", "provider_failed:<kind/name>", "shutdown", "rejected:<why>",
    "error:<what>".
    """

    call_id: str
    provider_call_id: str
    from_number: str
    to_number: str
    started: float
    ended: float
    end_reason: str
    providers: dict[str, str]
    turns: list[TurnRecord] = []
    usage: dict[str, float] = {}
    extra: dict[str, Any] = {}

    @property
    def duration(self) -> float:
        return max(0.0, self.ended - self.started)

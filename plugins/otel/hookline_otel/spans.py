"""One call as one OpenTelemetry trace, built from the call's typed events.

    call                              root: ids, providers, end reason, usage, cost
    ├── user turn                     first speech .. end of turn
    ├── agent turn                    caller's speech end .. last thing the agent did
    │   ├── stt_final                 the per-turn latencies (`TurnMetrics`), one span
    │   ├── end_of_turn               each, named like the metric keys
    │   ├── llm_first_token
    │   ├── tts_first_byte
    │   ├── voice_to_voice
    │   └── execute_tool <name>       one per tool call (GenAI semantic conventions)
    └── ...

Clocks: events carry trio's monotonic time, spans want wall-clock nanoseconds. Each call
pins the two together once, when it starts: the wall-clock `started` the engine hands
`hookline_call_started` and the trio time `t0` of that same moment. Every span of the
call is placed at `started + (t - t0)`, so they all sit on one clock and their durations
are the monotonic ones, even when the wall clock steps (NTP) in the middle of a call.

Stage placement: `TurnMetrics` carries durations, not the moments each stage began. The
stages measured from the caller's speech end (stt_final, end_of_turn, voice_to_voice)
start there, exactly; llm_first_token starts at the end of the turn (where the engine
starts the LLM); tts_first_byte ends where voice_to_voice does (the first audio). Each
stage span carries its exact figure as `hookline.latency_ms`.

Spans are built when the call ends, from the events kept meanwhile: the per-event hook
only appends to a list, and the spans go to the BatchSpanProcessor's queue, whose own
thread does the export.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, set_span_in_context

from hookline import (
    AgentSpoke,
    BargeIn,
    CallEvent,
    CallRecord,
    DtmfReceived,
    ProviderFailed,
    Reprompted,
    TelephonyStatus,
    ToolCallFinished,
    ToolCallStarted,
    TurnMetrics,
    UsageReported,
    UserSpeechStarted,
    UserTurnEnded,
)

__all__ = ["STAGES", "CallTrace", "Redaction", "emit_rejected", "emit_trace"]

# The stage spans of an agent turn, in the order they are added: the metric keys.
STAGES = ("stt_final", "end_of_turn", "llm_first_token", "tts_first_byte", "voice_to_voice")
_FROM_SPEECH_END = {"stt_final": "stt_final", "end_of_turn": "end_of_turn_delay"}
_FAILED = ("provider_failed:", "error:")
_MAX_TEXT = 4096  # longest text put on a span (backends cut or refuse longer values)


@dataclass(frozen=True)
class Redaction:
    """What a call's spans may show: its numbers as the logs show them, and texts only
    when transcripts are on (with the call's numbers replaced as analytics does)."""

    from_number: str
    to_number: str
    transcripts: bool = False
    scrub: Callable[[str], str] | None = None

    def text(self, value: str | None) -> str | None:
        if not self.transcripts or value is None:
            return None
        return self.error(value)

    def error(self, value: str) -> str:
        """Error texts go out always (they explain a failure) but never with a number."""
        value = self.scrub(value) if self.scrub else value
        return value[:_MAX_TEXT]


class CallTrace:
    """What one call has told the observers so far: its clock anchor and its events."""

    def __init__(self, started_wall: float, started_monotonic: float) -> None:
        self.started = started_wall
        self.started_ns = round(started_wall * 1e9)
        self._t0 = started_monotonic
        self.events: list[CallEvent] = []

    def ns(self, t: float) -> int:
        """A trio time of this call as wall-clock UNIX nanoseconds. Measured from the
        start in monotonic time, so durations keep their precision (a float of UNIX
        seconds holds only about a quarter of a microsecond)."""
        return self.started_ns + round((t - self._t0) * 1e9)


@dataclass
class _Tool:
    started: ToolCallStarted | None = None
    finished: ToolCallFinished | None = None


@dataclass
class _Turn:
    index: int
    role: str = "agent"
    times: list[float] = field(default_factory=list)
    speech_started: float | None = None
    speech_end: float | None = None  # the caller's, for an agent turn: the one it answers
    ended: UserTurnEnded | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    metrics_at: float | None = None
    tools: dict[str, _Tool] = field(default_factory=dict)
    usage: dict[str, float] = field(default_factory=dict)
    spoken: list[AgentSpoke] = field(default_factory=list)
    barge_ins: list[BargeIn] = field(default_factory=list)
    digits: list[DtmfReceived] = field(default_factory=list)


def _usage_keys(event: UsageReported) -> dict[str, float]:
    """The event's units under the CallRecord.usage keys."""
    kind = event.provider.split("/", 1)[0]
    if kind == "llm":
        return {
            "llm_prompt_tokens": event.prompt_tokens,
            "llm_completion_tokens": event.completion_tokens,
            "llm_cached_tokens": event.cached_tokens,
        }
    if kind == "tts":
        return {"tts_characters": event.characters}
    if kind in ("stt", "telephony"):
        return {f"{kind}_seconds": event.seconds}
    return {}


def _turns(events: list[CallEvent], record: CallRecord) -> dict[int, _Turn]:
    roles = {t.index: t.role for t in record.turns}
    turns: dict[int, _Turn] = {}

    def turn(i: int) -> _Turn:
        if i not in turns:
            turns[i] = _Turn(i, roles.get(i, "agent"))
        return turns[i]

    last_speech_end: float | None = None
    for ev in events:
        index = getattr(ev, "turn", None)
        if index is None or (isinstance(ev, UsageReported) and ev.provider.startswith("stt/")):
            continue  # call-wide: STT seconds are reported once, at the end
        tr = turn(index)
        if isinstance(ev, UserSpeechStarted):
            tr.role = roles.get(index, "user")
            tr.speech_started = tr.speech_started if tr.speech_started is not None else ev.t
        elif isinstance(ev, UserTurnEnded):
            tr.role = roles.get(index, "user")
            tr.ended, tr.speech_end, last_speech_end = ev, ev.speech_end, ev.speech_end
        elif isinstance(ev, TurnMetrics):
            tr.metrics.update(ev.metrics)
            tr.metrics_at = ev.t
            continue  # sent when the turn is closed, possibly after the next one began
        elif isinstance(ev, ToolCallStarted):
            tr.tools.setdefault(ev.call_id, _Tool()).started = ev
        elif isinstance(ev, ToolCallFinished):
            tr.tools.setdefault(ev.call_id, _Tool()).finished = ev
        elif isinstance(ev, UsageReported):
            for key, amount in _usage_keys(ev).items():
                tr.usage[key] = tr.usage.get(key, 0) + amount
        elif isinstance(ev, AgentSpoke):
            tr.spoken.append(ev)
        elif isinstance(ev, BargeIn):
            tr.barge_ins.append(ev)
        elif isinstance(ev, DtmfReceived):
            tr.digits.append(ev)
        tr.times.append(ev.t)
        if tr.role == "agent" and tr.speech_end is None and last_speech_end is not None:
            # The caller's words this turn answers; a later agent turn (a reprompt)
            # answers nothing the caller said.
            tr.speech_end, last_speech_end = last_speech_end, None
    return turns


def _stage_bounds(tr: _Turn) -> dict[str, tuple[float, float]]:
    """(start, end) in trio time of each stage span of an agent turn."""
    m, s = tr.metrics, tr.speech_end
    out: dict[str, tuple[float, float]] = {}
    if s is not None:
        for stage, key in _FROM_SPEECH_END.items():
            if key in m:
                out[stage] = (s, s + m[key] / 1000)
        if "voice_to_voice" in m:
            out["voice_to_voice"] = (s, s + m["voice_to_voice"] / 1000)
    llm_from = out["end_of_turn"][1] if "end_of_turn" in out else None
    if llm_from is None and tr.times:
        llm_from = min(tr.times)
    if "llm_first_token" in m and llm_from is not None:
        out["llm_first_token"] = (llm_from, llm_from + m["llm_first_token"] / 1000)
    if "tts_first_byte" in m:
        first_audio = out.get("voice_to_voice", (0.0, None))[1]
        if first_audio is None:
            first_audio = min((e.t for e in tr.spoken), default=None)
        if first_audio is not None:
            out["tts_first_byte"] = (first_audio - m["tts_first_byte"] / 1000, first_audio)
    return out


def _span(tracer: Tracer, name: str, parent: Span, start_ns: int, **kw: Any) -> Span:
    return tracer.start_span(name, context=set_span_in_context(parent), start_time=start_ns, **kw)


def _end(span: Span, end_ns: int, start_ns: int) -> None:
    span.end(end_time=max(end_ns, start_ns))


def _root_attributes(record: CallRecord, redaction: Redaction) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "hookline.call.id": record.call_id,
        "hookline.call.provider_call_id": record.provider_call_id,
        "hookline.call.end_reason": record.end_reason,
        "hookline.call.from": redaction.from_number,
        "hookline.call.to": redaction.to_number,
        "hookline.call.turns": len(record.turns),
    }
    for kind, name in record.providers.items():
        attrs[f"hookline.provider.{kind}"] = name
    for key, amount in record.usage.items():
        attrs[f"hookline.usage.{key}"] = amount
    return attrs


def _finish_root(root: Span, record: CallRecord, cost: Mapping[str, float]) -> None:
    for part, dollars in cost.items():
        root.set_attribute(f"hookline.cost.{part}_usd", round(dollars, 6))
    if record.end_reason.startswith(_FAILED):
        root.set_status(Status(StatusCode.ERROR, record.end_reason))


def emit_rejected(
    tracer: Tracer, record: CallRecord, redaction: Redaction, cost: Mapping[str, float]
) -> None:
    """A call refused before it started (busy, draining): a root span and nothing else."""
    start = round(record.started * 1e9)
    root = tracer.start_span(
        "call",
        kind=SpanKind.SERVER,
        start_time=start,
        attributes=_root_attributes(record, redaction),
    )
    _finish_root(root, record, cost)
    _end(root, round(record.ended * 1e9), start)


def emit_trace(
    tracer: Tracer,
    call: CallTrace,
    record: CallRecord,
    ended_monotonic: float,
    redaction: Redaction,
    cost: Mapping[str, float],
) -> None:
    """Build and end every span of one finished call."""
    start = call.started_ns
    end = max(call.ns(ended_monotonic), start)
    root = tracer.start_span(
        "call",
        kind=SpanKind.SERVER,
        start_time=start,
        attributes=_root_attributes(record, redaction),
    )
    previous_end = start
    for tr in sorted(_turns(call.events, record).values(), key=lambda t: t.index):
        previous_end = _emit_turn(tracer, root, call, tr, redaction, previous_end, end)
    for ev in call.events:
        if isinstance(ev, ProviderFailed):
            root.add_event(
                "provider_failed",
                {"hookline.provider": ev.provider, "hookline.fatal": ev.fatal,
                 "hookline.error": redaction.error(ev.error)},
                timestamp=call.ns(ev.t),
            )  # fmt: skip
        elif isinstance(ev, Reprompted):
            root.add_event(
                "reprompted",
                {"hookline.turn.index": ev.turn, "hookline.count": ev.count},
                timestamp=call.ns(ev.t),
            )
        elif isinstance(ev, TelephonyStatus) and "CallStatus" in ev.fields:
            root.add_event(
                "telephony_status",
                {"hookline.telephony.status": ev.fields["CallStatus"]},
                timestamp=call.ns(ev.t),
            )
    _finish_root(root, record, cost)
    _end(root, end, start)


def _emit_turn(
    tracer: Tracer,
    root: Span,
    call: CallTrace,
    tr: _Turn,
    redaction: Redaction,
    previous_end: int,
    call_end: int,
) -> int:
    """One turn's span and its children; returns where the turn ended (ns)."""
    stages = _stage_bounds(tr) if tr.role == "agent" else {}
    tool_times = [
        t for tool in tr.tools.values() for t in (tool.started, tool.finished) if t is not None
    ]
    points = [*tr.times, *(b for se in stages.values() for b in se), *(e.t for e in tool_times)]
    if tr.role == "user" and tr.speech_started is not None:
        begin = call.ns(tr.speech_started)
    elif tr.role == "agent" and tr.speech_end is not None:
        begin = call.ns(tr.speech_end)
    else:  # the greeting, a reprompt: from where the turn before it ended
        begin = min([previous_end, *(call.ns(p) for p in points)]) if points else previous_end
    begin = min([begin, *(call.ns(p) for p in points)])
    finish = max([begin, *(call.ns(p) for p in points)])
    if tr.metrics_at is not None:  # the turn was closed then (metrics are sent at close)
        finish = max(finish, min(call.ns(tr.metrics_at), call_end))
    attrs: dict[str, Any] = {"hookline.turn.index": tr.index, "hookline.turn.role": tr.role}
    for key, amount in tr.usage.items():
        attrs[f"hookline.usage.{key}"] = amount
    if "runtime_overhead" in tr.metrics:
        attrs["hookline.latency.runtime_overhead_ms"] = tr.metrics["runtime_overhead"]
    if tr.role == "agent":
        attrs["hookline.turn.interrupted"] = bool(tr.barge_ins)
        said = redaction.text(" ".join(e.text for e in tr.spoken))
        heard = redaction.text(" ".join(e.text for e in tr.spoken if e.heard))
        if said is not None and heard is not None:
            attrs["hookline.transcript"] = said
            attrs["hookline.transcript.heard"] = heard
    elif tr.ended is not None:
        attrs["hookline.turn.end"] = tr.ended.reason
        if (said := redaction.text(tr.ended.text)) is not None:
            attrs["hookline.transcript"] = said
    span = _span(tracer, f"{tr.role} turn", root, begin, attributes=attrs)
    for ev in tr.barge_ins:
        extra: dict[str, Any] = {}
        if (heard := redaction.text(ev.heard_text)) is not None:
            extra["hookline.transcript.heard"] = heard
            extra["hookline.transcript.interim"] = redaction.text(ev.interim_text) or ""
        span.add_event("barge_in", extra, timestamp=call.ns(ev.t))
    for ev in tr.digits:
        digit = {"hookline.dtmf.digit": d} if (d := redaction.text(ev.digit)) else {}
        span.add_event("dtmf", digit, timestamp=call.ns(ev.t))
    for stage in STAGES:
        if stage not in stages:
            continue
        s, e = stages[stage]
        key = _FROM_SPEECH_END.get(stage, stage)
        child = _span(
            tracer, stage, span, call.ns(s),
            attributes={"hookline.stage": stage, "hookline.latency_ms": tr.metrics[key]},
        )  # fmt: skip
        _end(child, call.ns(e), call.ns(s))
    for tool_call_id, tool in tr.tools.items():
        _emit_tool(tracer, span, call, tool_call_id, tool, redaction, finish)
    _end(span, finish, begin)
    return finish


def _emit_tool(
    tracer: Tracer,
    turn: Span,
    call: CallTrace,
    tool_call_id: str,
    tool: _Tool,
    redaction: Redaction,
    turn_end: int,
) -> None:
    first = tool.started or tool.finished
    assert first is not None
    name = first.tool
    begin = call.ns(first.t)
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": name,
        "gen_ai.tool.call.id": tool_call_id,
    }
    if tool.started and (args := redaction.text(tool.started.arguments)) is not None:
        attrs["gen_ai.tool.call.arguments"] = args
    span = _span(tracer, f"execute_tool {name}", turn, begin, kind=SpanKind.INTERNAL)
    span.set_attributes(attrs)
    done = tool.finished
    if done is None:  # the call ended while the tool ran
        span.set_status(Status(StatusCode.ERROR, "unfinished: the call ended first"))
        _end(span, turn_end, begin)
        return
    span.set_attribute("hookline.tool.ok", done.ok)
    span.set_attribute("hookline.latency_ms", done.latency_ms)
    if (result := redaction.text(done.result)) is not None:
        span.set_attribute("gen_ai.tool.call.result", result)
    if not done.ok:
        span.set_attribute("error.type", "tool_error")
        span.set_status(Status(StatusCode.ERROR, redaction.error(done.error or "failed")))
    _end(span, call.ns(done.t), begin)

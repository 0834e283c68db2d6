"""Turning calls and events into table rows, with the privacy and price settings applied.

Everything here runs on the writer thread, never on the trio thread: the hooks only
hand over the objects they were given.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from ..config import PricesConfig
from ..events import (
    AgentSpoke,
    BargeIn,
    CallEvent,
    CallRecord,
    DtmfReceived,
    TelephonyStatus,
    ToolCallFinished,
    ToolCallRecord,
    ToolCallStarted,
    TurnMetrics,
    UsageReported,
    UserTurnEnded,
)
from ..providers import CallInfo
from .schema import TABLES

if TYPE_CHECKING:
    from ..summary import CallSummary

__all__ = ["Cost", "Privacy", "Shaper", "estimate_cost", "hash_number"]

Row = tuple[Any, ...]

_encode = msgspec.json.Encoder().encode
_CALLS_COLUMNS = frozenset(TABLES["calls"])

# Twilio status-callback fields that hold phone numbers: treated like from/to.
_NUMBER_FIELDS = frozenset({"From", "To", "Caller", "Called", "ForwardedFrom"})


_EPOCH = datetime(1970, 1, 1)


def utc(ts: float | None) -> datetime | None:
    """UNIX seconds to a naive UTC datetime (the schema's TIMESTAMPs are UTC)."""
    if ts is None:
        return None
    return _EPOCH + timedelta(seconds=ts)


def hash_number(number: str, salt: bytes) -> str:
    """HMAC-SHA256 of a phone number: the same caller always maps to the same value, and
    without the salt the value cannot be reversed by hashing every possible number."""
    return hmac.new(salt, number.encode(), hashlib.sha256).hexdigest()


DROPPED_NUMBER = "[number]"  # what stands in a text for a number the setting drops

# Between two digits of a written number: spaces, dots, dashes, brackets.
_SEP = r"[\s().\-]{0,3}"
_LOCAL_DIGITS = 7  # the shortest tail of a number that is still recognisably that number


@functools.lru_cache(maxsize=4096)
def number_pattern(digits: str) -> re.Pattern[str]:
    """The ways one number is written in text: "+15551230000", "15551230000",
    "5551230000", "(555) 123-0000", "+1 555 123 0000", "555.123.0000", "123-0000", and
    with a "0" or "00" prefix. Any suffix of the full digits at least 7 long matches; a
    longer run of digits does not (it is another number)."""
    tail_len = min(_LOCAL_DIGITS, len(digits))
    head, tail = digits[:-tail_len], digits[-tail_len:]
    optional_head = ""
    for d in head:  # left-nested: any suffix of the head may precede the tail
        optional_head = f"(?:{optional_head}{d}{_SEP})?"
    return re.compile(rf"(?<!\d)(?:(?:\+|00?){_SEP})?\(?{optional_head}{_SEP.join(tail)}(?!\d)")


@dataclass(frozen=True)
class Privacy:
    """The single place that applies `[analytics] caller_numbers` and `transcripts`:
    the number columns, and a call's numbers wherever else they turn up (what the
    caller said, tool arguments and results, events, extra data)."""

    numbers: Literal["plain", "hashed", "drop"] = "plain"
    salt: bytes = b""
    transcripts: bool = True

    def redactor(self, numbers: Iterable[str | None]) -> Callable[[str], str] | None:
        """A function that replaces `numbers` in a text by their hash (or by
        DROPPED_NUMBER); None when numbers are kept in the clear."""
        if self.numbers == "plain":
            return None
        subs: list[tuple[re.Pattern[str], str]] = []
        for number in dict.fromkeys(n for n in numbers if n):
            digits = re.sub(r"\D", "", number)
            if digits:
                subs.append((number_pattern(digits), self.number(number) or DROPPED_NUMBER))

        def redact(text: str) -> str:
            for pattern, mark in subs:
                text = pattern.sub(mark, text)
            return text

        return redact

    def number(self, value: str | None) -> str | None:
        if not value:
            return None
        if self.numbers == "drop":
            return None
        if self.numbers == "hashed":
            return hash_number(value, self.salt)
        return value

    def text(self, value: str | None) -> str | None:
        return value if self.transcripts else None

    def event(self, event: CallEvent) -> CallEvent:
        """The event as it may be stored: numbers and transcripts treated per config."""
        replace = msgspec.structs.replace
        if isinstance(event, TelephonyStatus) and self.numbers != "plain":
            fields = {
                k: (self.number(v) or "") if k in _NUMBER_FIELDS else v
                for k, v in event.fields.items()
            }
            return replace(event, fields=fields)
        if self.transcripts:
            return event
        if isinstance(event, UserTurnEnded | AgentSpoke):
            return replace(event, text="")
        if isinstance(event, BargeIn):
            return replace(event, heard_text="", interim_text="")
        if isinstance(event, ToolCallStarted):
            return replace(event, arguments="")
        if isinstance(event, ToolCallFinished):
            return replace(event, result="")
        if isinstance(event, DtmfReceived):  # digits can be account numbers or PINs
            return replace(event, digit="")
        return event


class Cost(msgspec.Struct, frozen=True):
    llm: float
    tts: float
    stt: float
    telephony: float

    @property
    def total(self) -> float:
        return self.llm + self.tts + self.stt + self.telephony


def estimate_cost(usage: Mapping[str, float], duration_s: float, prices: PricesConfig) -> Cost:
    """Dollars for one call. Cached prompt tokens are billed at the cached rate (they are
    part of `llm_prompt_tokens`); telephony falls back to the call's length when the
    telephony provider reported no billed seconds."""
    prompt = usage.get("llm_prompt_tokens", 0.0)
    cached = min(usage.get("llm_cached_tokens", 0.0), prompt)
    completion = usage.get("llm_completion_tokens", 0.0)
    llm = (
        (prompt - cached) * prices.llm_input_per_million
        + cached * prices.llm_cached_input_per_million
        + completion * prices.llm_output_per_million
    ) / 1e6
    tts = usage.get("tts_characters", 0.0) / 1000 * prices.tts_per_thousand_chars
    stt = usage.get("stt_seconds", 0.0) / 60 * prices.stt_per_minute
    tel_s = usage.get("telephony_seconds", duration_s)
    telephony = tel_s / 60 * prices.telephony_per_minute
    return Cost(llm=llm, tts=tts, stt=stt, telephony=telephony)


@dataclass
class CallState:
    """What the writer remembers about a call between its start and its end."""

    provider_call_id: str = ""
    numbers: tuple[str, ...] = ()  # the call's phone numbers, kept out of its raw events
    seq: int = 0
    # Fallbacks for a record that leaves these empty: collected from the events.
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    tool_args: dict[str, str] = field(default_factory=dict)
    tools: list[tuple[int, float, ToolCallFinished]] = field(default_factory=list)
    usage: dict[str, float] = field(default_factory=dict)

    def observe(self, event: CallEvent, wall: float) -> None:
        if isinstance(event, TurnMetrics):
            self.metrics.setdefault(event.turn, {}).update(event.metrics)
        elif isinstance(event, ToolCallStarted):
            self.tool_args[event.call_id] = event.arguments
        elif isinstance(event, ToolCallFinished):
            self.tools.append((event.turn, wall, event))
        elif isinstance(event, UsageReported):
            u = self.usage
            kind = event.provider.split("/", 1)[0]
            if kind == "llm":
                u["llm_prompt_tokens"] = u.get("llm_prompt_tokens", 0) + event.prompt_tokens
                u["llm_completion_tokens"] = (
                    u.get("llm_completion_tokens", 0) + event.completion_tokens
                )
                u["llm_cached_tokens"] = u.get("llm_cached_tokens", 0) + event.cached_tokens
            elif kind == "tts":
                u["tts_characters"] = u.get("tts_characters", 0) + event.characters
            elif kind == "stt":
                u["stt_seconds"] = u.get("stt_seconds", 0) + event.seconds
            elif kind == "telephony":
                u["telephony_seconds"] = u.get("telephony_seconds", 0) + event.seconds


@dataclass(frozen=True)
class Shaper:
    """Builds rows for one runtime's calls: its privacy rules, prices and providers."""

    privacy: Privacy
    prices: PricesConfig
    providers: dict[str, str]
    models: dict[str, str]
    store_events: bool = True

    def started_row(self, info: CallInfo, started: float) -> Row:
        p = self.privacy
        row = calls_row(
            id=info.call_id,
            provider_call_id=info.provider_call_id,
            started=utc(started),
            from_number=p.number(info.from_number),
            to_number=p.number(info.to_number),
            providers=self.providers,
            models=self.models,
        )
        return _scrub_row(row, p.redactor(numbers_of(info)))

    def ended_rows(
        self, info: CallInfo, record: CallRecord, state: CallState | None
    ) -> dict[str, list[Row]]:
        """Rows for every table but events: the final calls row, turns, latencies, tools."""
        p = self.privacy
        redact = p.redactor((*numbers_of(info), record.from_number, record.to_number))
        cid = record.call_id or info.call_id
        usage = dict(record.usage) or (dict(state.usage) if state else {})
        cost = estimate_cost(usage, record.duration, self.prices)
        turns: list[Row] = []
        latencies: list[Row] = []
        tools: list[Row] = []
        seen_tools: set[str] = set()
        for turn in record.turns:
            ts = utc(turn.started)
            turns.append((
                cid, turn.index, turn.role, p.text(turn.text),
                p.text(turn.heard_text) if turn.role == "agent" else None,
                turn.interrupted, ts, utc(turn.ended),
                max(0.0, turn.ended - turn.started) * 1000,
            ))  # fmt: skip
            metrics = turn.metrics or (state.metrics.get(turn.index, {}) if state else {})
            latencies.extend((cid, turn.index, ts, m, float(v)) for m, v in metrics.items())
            for tc in turn.tool_calls:
                seen_tools.add(tc.call_id)
                tools.append(self._tool_row(cid, turn.index, ts, tc))
        if state:
            recorded = {t.index for t in record.turns}
            for index, metrics in state.metrics.items():
                if index not in recorded:  # metrics of a turn the record left out
                    latencies.extend((cid, index, None, m, float(v)) for m, v in metrics.items())
            for index, wall, ev in state.tools:
                if ev.call_id not in seen_tools:
                    rec = ToolCallRecord(
                        call_id=ev.call_id, tool=ev.tool,
                        arguments=state.tool_args.get(ev.call_id, ""), ok=ev.ok,
                        result=ev.result, error=ev.error, latency_ms=ev.latency_ms,
                    )  # fmt: skip
                    tools.append(self._tool_row(cid, index, utc(wall), rec))
        interrupted = sum(1 for t in record.turns if t.role == "agent" and t.interrupted)
        extra = _encode(_scrub(record.extra, redact)).decode() if record.extra else None
        call = calls_row(
            id=cid,
            provider_call_id=record.provider_call_id or info.provider_call_id,
            started=utc(record.started),
            ended=utc(record.ended),
            duration_s=record.duration,
            from_number=p.number(record.from_number or info.from_number),
            to_number=p.number(record.to_number or info.to_number),
            end_reason=record.end_reason,
            turns=len(record.turns),
            interrupted_turns=interrupted,
            providers=dict(record.providers) or self.providers,
            models=self.models,
            llm_prompt_tokens=_int(usage.get("llm_prompt_tokens")),
            llm_completion_tokens=_int(usage.get("llm_completion_tokens")),
            llm_cached_tokens=_int(usage.get("llm_cached_tokens")),
            tts_characters=_int(usage.get("tts_characters")),
            stt_seconds=usage.get("stt_seconds"),
            telephony_seconds=usage.get("telephony_seconds"),
            cost_usd=cost.total,
            cost_llm_usd=cost.llm,
            cost_tts_usd=cost.tts,
            cost_stt_usd=cost.stt,
            cost_telephony_usd=cost.telephony,
            extra=extra,
        )
        rows = {"calls": [call], "turns": turns, "latencies": latencies, "tool_calls": tools}
        return {table: [_scrub_row(r, redact) for r in rs] for table, rs in rows.items()}

    def _tool_row(self, cid: str, turn: int, ts: datetime | None, tc: ToolCallRecord) -> Row:
        p = self.privacy
        return (
            cid, turn, ts, tc.call_id, tc.tool, p.text(tc.arguments), tc.ok, tc.error,
            p.text(tc.result), tc.latency_ms,
        )  # fmt: skip

    def summary_row(self, record: CallRecord, result: CallSummary) -> Row:
        """A `call_summaries` row. The free text is call content: kept only when
        transcripts are, with the call's numbers treated like everywhere else."""
        p = self.privacy
        f = result.fields
        row = (
            result.call_id, result.status, result.reason,
            p.text(f.summary) if f else None, p.text(f.reason_for_calling) if f else None,
            f.outcome if f else None, p.text(f.vehicle) if f else None,
            f.follow_up_needed if f else None, p.text(f.follow_up) if f else None,
            f.sentiment if f else None, result.model, result.prompt_tokens or None,
            result.completion_tokens or None, result.latency_ms, utc(time.time()),
        )  # fmt: skip
        return _scrub_row(row, p.redactor((record.from_number, record.to_number)))

    def event_row(
        self,
        call_id: str,
        provider_call_id: str,
        seq: int,
        wall: float,
        event: CallEvent,
        numbers: Iterable[str | None] = (),
    ) -> Row:
        """One raw event; `numbers` are the call's numbers, kept out of its data as the
        privacy setting says."""
        stored: Any = self.privacy.event(event)
        if redact := self.privacy.redactor(numbers):
            stored = _scrub(msgspec.to_builtins(stored), redact)
        return (
            call_id, provider_call_id, seq, utc(wall), event.t, type(event).__name__,
            getattr(event, "turn", None), _encode(stored).decode(),
        )  # fmt: skip


def numbers_of(info: CallInfo) -> tuple[str, str]:
    """The phone numbers of a call: the caller's and the one they called."""
    return info.from_number, info.to_number


def _scrub(value: Any, redact: Callable[[str], str] | None) -> Any:
    """`value` (JSON-like) with the numbers `redact` knows replaced, even as integers."""
    if redact is None:
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {_scrub(k, redact): _scrub(v, redact) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v, redact) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
        redacted = redact(text)
        return value if redacted == text else redacted
    return value


def _scrub_row(row: Row, redact: Callable[[str], str] | None) -> Row:
    """A row with the numbers replaced in its text columns (the others keep their type)."""
    if redact is None:
        return row
    return tuple(redact(c) if isinstance(c, str) else c for c in row)


def calls_row(**columns: Any) -> Row:
    """A `calls` row in table column order; columns not given are NULL."""
    unknown = columns.keys() - _CALLS_COLUMNS
    assert not unknown, f"not columns of calls: {unknown}"
    return tuple(columns.get(c) for c in TABLES["calls"])


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)

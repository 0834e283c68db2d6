"""Simulated calls for analytics: realistic event streams and CallRecords, driven through a
runtime's observer hooks exactly as the call engine drives them.

Used by the analytics tests and `bench/bench_analytics.py`, and handy for trying queries
on a database before real calls exist. Nothing here talks to a provider: an
`observer_runtime` has placeholder providers that only answer `synthesize` (with silence),
which is all `Runtime.start()` needs.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec
import trio

from hookline.config import AgentConfig, AnalyticsConfig, Config, PricesConfig, ProvidersConfig
from hookline.events import (
    AgentSpoke,
    BargeIn,
    CallEvent,
    CallRecord,
    ProviderFailed,
    ToolCallFinished,
    ToolCallRecord,
    ToolCallStarted,
    TurnMetrics,
    TurnRecord,
    UsageReported,
    UserSpeechStarted,
    UserTurnEnded,
)
from hookline.hookspecs import hookimpl
from hookline.plugins import Plugins, new_plugin_manager
from hookline.providers import CallInfo, ProviderSpec
from hookline.runtime import KINDS, Runtime

__all__ = [
    "CallKind",
    "apply_steps",
    "observer_runtime",
    "plan_calls",
    "run_calls",
    "script_call",
    "simulate_calls",
]

CallKind = Literal["normal", "barge_in", "provider_failure", "tools", "rejected"]

SILENCE = b"\xff" * 160  # one 20 ms mu-law frame of silence


class SimSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    model: str = "sim-1"


class _Placeholder:
    """A provider slot an observer-only runtime never uses for a call."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    async def synthesize(self, text: str, fmt: Any) -> bytes:
        return SILENCE


class _SimPlugin:
    @hookimpl
    def hookline_providers(self) -> list[ProviderSpec]:
        return [
            ProviderSpec(kind=k, name="sim", settings=SimSettings, create=_create(k)) for k in KINDS
        ]


def _create(kind: str) -> Any:
    return lambda settings, ctx: _Placeholder(kind)


def observer_runtime(
    database: str | Path,
    *,
    analytics: AnalyticsConfig | None = None,
    prices: PricesConfig | None = None,
    plugins: Plugins | None = None,
) -> Runtime:
    """A Runtime with the analytics plugin and placeholder providers, writing to `database`."""
    from hookline.analytics import plugin as analytics_plugin

    if plugins is None:
        plugins = Plugins(pm=new_plugin_manager())
        plugins.add(_SimPlugin(), "sim")
        plugins.add(analytics_plugin, "analytics")
    a = analytics or AnalyticsConfig()
    a = msgspec.structs.replace(a, database=str(database))
    config = Config(
        agent=AgentConfig(fillers=[]),
        providers=ProvidersConfig(telephony="sim", stt="sim", llm="sim", tts="sim"),
        analytics=a,
        prices=prices or PricesConfig(),
    )
    return Runtime(config, plugins)


# ---------------------------------------------------------------------------- scripts

GREETING = "Thanks for calling Riverside Auto Service. How can I help?"
_USER_LINES = [
    "Hi, I'd like to book an oil change for my Civic.",
    "Do you have anything Thursday morning?",
    "Can you move my appointment to Friday?",
    "How much is a brake inspection?",
    "I need a tow, my car won't start.",
    "What are your hours on Saturday?",
    "Cancel my appointment please.",
    "Yes, that works.",
]
_AGENT_LINES = [
    "Sure, I can help with that. What day works best for you?",
    "We have openings Thursday at nine and at ten thirty.",
    "Done, you're booked for Thursday at nine. Anything else?",
    "A brake inspection is forty nine dollars and takes about an hour.",
    "I've requested a tow truck; it should arrive within forty minutes.",
    "We're open from eight to two on Saturdays.",
]
_TOOLS = [
    ("check_availability", '{"day": "thursday"}', '{"slots": ["09:00", "10:30"]}'),
    ("book_appointment", '{"slot": "09:00", "service": "oil change"}', '{"booking": "B-1042"}'),
    ("move_appointment", '{"booking": "B-1042", "slot": "fri 09:00"}', '{"ok": true}'),
    ("request_tow", '{"address": "12 Elm St"}', '{"eta_min": 40}'),
]


@dataclass
class Step:
    """After `delay` seconds, emit `event` (or start/end the call)."""

    delay: float
    event: CallEvent | None = None
    start: float | None = None
    record: CallRecord | None = None


def script_call(
    kind: CallKind,
    *,
    call_id: str,
    started: float,
    rng: random.Random,
    turns: int = 4,
    from_number: str = "+15551230000",
) -> Iterator[Step]:
    """The steps of one simulated call: events as the engine would emit them, then its
    CallRecord. `started` is its wall-clock start; monotonic `t` starts at 1000."""
    record = CallRecord(
        call_id=call_id, provider_call_id=f"CA{call_id}", from_number=from_number,
        to_number="+15559870000", started=started, ended=started, end_reason="caller_hangup",
        providers={k: "sim" for k in KINDS},
    )  # fmt: skip
    if kind == "rejected":
        record.end_reason = "rejected:busy"
        yield Step(0.0, record=record)
        return
    yield Step(0.0, start=started)
    wall = started + 0.2
    mono = 1000.0
    usage: dict[str, float] = {}

    def add(key: str, value: float) -> None:
        usage[key] = usage.get(key, 0.0) + value

    # The cached greeting is turn 0, as in the engine.
    yield Step(0.01, AgentSpoke(t=mono, turn=0, text=GREETING, heard=True))
    record.turns.append(TurnRecord(index=0, role="agent", text=GREETING, heard_text=GREETING,
                                   started=started, ended=wall))  # fmt: skip
    index = 1
    for n in range(turns):
        # The caller speaks.
        text = rng.choice(_USER_LINES)
        speak_s = 0.8 + rng.random() * 1.5
        yield Step(0.01, UserSpeechStarted(t=mono, turn=index))
        mono += speak_s
        wall += speak_s
        end_delay = 0.2 + rng.random() * 0.4
        yield Step(0.01, UserTurnEnded(t=mono + end_delay, turn=index, text=text,
                                       speech_end=mono, reason="speech_final"))  # fmt: skip
        record.turns.append(TurnRecord(index=index, role="user", text=text,
                                       started=wall - speak_s, ended=wall))  # fmt: skip
        index += 1
        if kind == "provider_failure" and n == turns - 1:
            yield Step(0.01, ProviderFailed(t=mono + 5, provider="llm/sim",
                                            error="ProviderTimeout: no first token in 5.0 s",
                                            fatal=True))  # fmt: skip
            record.end_reason = "provider_failed:llm/sim"
            wall += 5.5
            break
        # The agent answers, maybe with a tool first.
        metrics = {
            "stt_final": 80 + rng.random() * 120,
            "end_of_turn_delay": end_delay * 1000,
            "llm_first_token": 250 + rng.random() * 400,
            "tts_first_byte": 90 + rng.random() * 150,
        }
        tool_calls: list[ToolCallRecord] = []
        if kind == "tools" or (kind == "normal" and rng.random() < 0.3):
            name, args, result = rng.choice(_TOOLS)
            ok = rng.random() > 0.15
            latency = 100 + rng.random() * 900
            tc_id = f"tc_{call_id}_{index}"
            yield Step(0.01, ToolCallStarted(t=mono, turn=index, call_id=tc_id, tool=name,
                                             arguments=args))  # fmt: skip
            err = None if ok else "ToolError: the calendar did not answer"
            tool_calls.append(ToolCallRecord(call_id=tc_id, tool=name, arguments=args, ok=ok,
                                             result=result if ok else "", error=err,
                                             latency_ms=latency))  # fmt: skip
            yield Step(0.01, ToolCallFinished(t=mono + latency / 1000, turn=index,
                                              call_id=tc_id, tool=name, ok=ok,
                                              result=result if ok else "", error=err,
                                              latency_ms=latency))  # fmt: skip
            metrics["tool"] = latency
        providers_ms = sum(metrics.values()) - metrics["end_of_turn_delay"]
        overhead = 3 + rng.random() * 12
        metrics["runtime_overhead"] = overhead
        metrics["voice_to_voice"] = metrics["end_of_turn_delay"] + providers_ms + overhead
        said = rng.choice(_AGENT_LINES)
        barge = kind == "barge_in" and rng.random() < 0.7
        heard = said.split(". ")[0] + "." if barge else said
        prompt = 600 + 150 * n
        completion = len(said) // 4
        cached = prompt // 2 if n else 0
        yield Step(0.01, TurnMetrics(t=mono + 1, turn=index, metrics=metrics))
        yield Step(0.01, UsageReported(t=mono + 1, turn=index, provider="llm/sim",
                                       prompt_tokens=prompt, completion_tokens=completion,
                                       cached_tokens=cached))  # fmt: skip
        yield Step(0.01, UsageReported(t=mono + 1, turn=index, provider="tts/sim",
                                       characters=len(said)))  # fmt: skip
        add("llm_prompt_tokens", prompt)
        add("llm_completion_tokens", completion)
        add("llm_cached_tokens", cached)
        add("tts_characters", len(said))
        if barge:
            yield Step(0.01, AgentSpoke(t=mono + 2, turn=index, text=heard, heard=True))
            yield Step(0.01, BargeIn(t=mono + 2.5, turn=index, heard_text=heard,
                                     interim_text="wait, actually"))  # fmt: skip
        else:
            yield Step(0.01, AgentSpoke(t=mono + 3, turn=index, text=said, heard=True))
        agent_s = 1.5 + rng.random() * 2
        record.turns.append(TurnRecord(
            index=index, role="agent", text=said, heard_text=heard, interrupted=barge,
            started=wall + metrics["voice_to_voice"] / 1000, ended=wall + agent_s,
            metrics=metrics, tool_calls=tool_calls,
        ))  # fmt: skip
        index += 1
        mono += agent_s + 0.5
        wall += agent_s + 0.5
    record.ended = wall
    add("stt_seconds", wall - started)
    add("telephony_seconds", wall - started)
    record.usage = usage
    yield Step(0.01, record=record)


def _apply(runtime: Runtime, info: CallInfo, step: Step) -> None:
    if step.start is not None:
        runtime.call_started(info, step.start)
    elif step.event is not None:
        runtime.notify(info, step.event)
    elif step.record is not None:
        runtime.call_ended(info, step.record)


def _kinds(n: int, kinds: tuple[CallKind, ...]) -> Iterator[tuple[int, CallKind]]:
    for i in range(n):
        yield i, kinds[i % len(kinds)]


DEFAULT_KINDS: tuple[CallKind, ...] = (
    "normal",
    "barge_in",
    "tools",
    "provider_failure",
    "rejected",
)


def plan_calls(
    n: int,
    *,
    kinds: tuple[CallKind, ...] = DEFAULT_KINDS,
    days: int = 3,
    seed: int = 7,
    now: float | None = None,
) -> list[tuple[CallInfo, Step]]:
    """The steps of `n` calls one after the other, spread over the last `days` days."""
    rng = random.Random(seed)
    now = time.time() if now is None else now
    steps = []
    for i, kind in _kinds(n, kinds):
        started = now - (i % days) * 86400 - 3600 - rng.random() * 3600
        call_id = f"sim{seed:03d}{i:05d}"
        info = CallInfo(call_id=call_id, provider_call_id=f"CA{call_id}",
                        from_number=f"+1555123{i % 50:04d}", to_number="+15559870000")  # fmt: skip
        for step in script_call(kind, call_id=call_id, started=started, rng=rng,
                                from_number=info.from_number):  # fmt: skip
            steps.append((info, step))
    return steps


def apply_steps(runtime: Runtime, steps: list[tuple[CallInfo, Step]]) -> list[CallRecord]:
    """Drive planned steps through the runtime's hooks; return the calls' records."""
    for info, step in steps:
        _apply(runtime, info, step)
    return [step.record for _, step in steps if step.record is not None]


def simulate_calls(
    runtime: Runtime,
    n: int,
    *,
    kinds: tuple[CallKind, ...] = DEFAULT_KINDS,
    days: int = 3,
    seed: int = 7,
    now: float | None = None,
) -> list[CallRecord]:
    """Drive `n` calls through the runtime's hooks one after the other, spread over the
    last `days` days. Returns their records."""
    return apply_steps(runtime, plan_calls(n, kinds=kinds, days=days, seed=seed, now=now))


async def run_calls(
    runtime: Runtime,
    n: int,
    *,
    kinds: tuple[CallKind, ...] = DEFAULT_KINDS,
    pace: float = 1.0,
    seed: int = 7,
) -> list[CallRecord]:
    """Run `n` simulated calls concurrently in trio, each step `pace` x its delay apart."""
    rng = random.Random(seed)
    records: list[CallRecord] = []

    async def one(i: int, kind: CallKind) -> None:
        call_id = f"run{seed:03d}{i:05d}"
        info = CallInfo(call_id=call_id, provider_call_id=f"CA{call_id}",
                        from_number=f"+1555777{i % 50:04d}", to_number="+15559870000")  # fmt: skip
        for step in script_call(kind, call_id=call_id, started=time.time(), rng=rng,
                                from_number=info.from_number):  # fmt: skip
            await trio.sleep(step.delay * pace)
            _apply(runtime, info, step)
            if step.record is not None:
                records.append(step.record)

    async with trio.open_nursery() as nursery:
        for i, kind in _kinds(n, kinds):
            nursery.start_soon(one, i, kind)
    return records

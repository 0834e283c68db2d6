"""Runtime overhead, voice-to-voice and capacity with N concurrent calls, real clock.

Every call runs the real engine over the scripted in-process providers, whose latencies
are fixed (STT endpointing 300 ms, LLM first token 200 ms, TTS first byte 100 ms), so
what varies with load is hookline itself. The caller side (20 ms frames in, real-time
playback out) and the scripted providers run in the same process and their CPU counts
too: the figures are an upper bound on hookline's own cost.

    uv run python bench/bench_calls.py --calls 1 10 50 --turns 3

Prints one JSON line: per N, p50/p99 runtime overhead and voice-to-voice (ms), the
worst event-loop lag (ms), CPU seconds per call-minute and resident memory per call.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

import msgspec
import trio

from hookline.events import BargeIn, TurnMetrics
from hookline.hookspecs import hookimpl
from hookline.testing.harness import make_config, run_call, scripted_runtime
from hookline.testing.scripted import (
    HangUpStep,
    Say,
    ScriptedLeg,
    ScriptedLLM,
    ScriptedSTT,
    WaitForAgent,
    call_info,
)


class Collector:
    def __init__(self) -> None:
        self.metrics: list[dict[str, float]] = []
        self.barge_ins: list[BargeIn] = []

    @hookimpl
    def hookline_call_event(self, call, event):
        if isinstance(event, TurnMetrics):
            self.metrics.append(event.metrics)
        elif isinstance(event, BargeIn):
            self.barge_ins.append(event)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 2)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def lag_probe(worst: list[float]) -> None:
    while True:
        before = trio.current_time()
        await trio.sleep(0.01)
        worst[0] = max(worst[0], trio.current_time() - before - 0.01)


async def run_level(n: int, turns: int) -> dict:
    collector = Collector()
    stt = ScriptedSTT()
    answer = "Sure, I can help with that. What day works best for you?"
    llm = ScriptedLLM(respond=lambda messages: answer)
    config = make_config(policy={"silence_reprompt_s": 30})
    runtime = await scripted_runtime(config, stt=stt, llm=llm, plugins=[collector])
    runtime.config.server.max_concurrent_calls = n
    gc.collect()
    rss_before = rss_mb()
    cpu_before = time.process_time()
    wall_before = time.perf_counter()
    worst_lag = [0.0]
    call_seconds = 0.0
    rss_peak = rss_before

    async def one(i: int) -> None:
        nonlocal call_seconds, rss_peak
        await trio.sleep(i * 0.05)  # stagger starts like real traffic
        script: list = [WaitForAgent()]
        for t in range(turns):
            script += [Say(f"I need an oil change number {t}"), WaitForAgent()]
        script += [HangUpStep()]
        record = await run_call(runtime, ScriptedLeg(call_info(), script, stt))
        call_seconds += record.duration
        rss_peak = max(rss_peak, rss_mb())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lag_probe, worst_lag)
        async with trio.open_nursery() as calls:
            for i in range(n):
                calls.start_soon(one, i)
        nursery.cancel_scope.cancel()
    cpu = time.process_time() - cpu_before
    overhead = [m["runtime_overhead"] for m in collector.metrics if "runtime_overhead" in m]
    v2v = [m["voice_to_voice"] for m in collector.metrics if "voice_to_voice" in m]
    return {
        "calls": n,
        "turns_measured": len(overhead),
        "overhead_ms_p50": pct(overhead, 0.5),
        "overhead_ms_p99": pct(overhead, 0.99),
        "voice_to_voice_ms_p50": pct(v2v, 0.5),
        "voice_to_voice_ms_p99": pct(v2v, 0.99),
        "worst_loop_lag_ms": round(worst_lag[0] * 1000, 2),
        "cpu_s_per_call_minute": round(cpu / (call_seconds / 60), 3) if call_seconds else None,
        "rss_mb_per_call": round((rss_peak - rss_before) / n, 2),
        "wall_s": round(time.perf_counter() - wall_before, 1),
    }


async def main(levels: list[int], turns: int) -> None:
    results = [await run_level(n, turns) for n in levels]
    sys.stdout.write(msgspec.json.encode({"bench": "calls", "levels": results}).decode() + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--turns", type=int, default=3)
    args = parser.parse_args()
    trio.run(main, args.calls, args.turns)

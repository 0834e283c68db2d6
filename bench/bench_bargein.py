"""Barge-in: from the engine's barge-in decision to `clear` reaching the leg, and how much
of the interrupted answer's audio was still handed to the leg after the clear.

N concurrent calls on the real clock, each interrupting a long answer once, over the
scripted providers (fixed latencies), so the figures are hookline's own.

    uv run python bench/bench_bargein.py --calls 1 20
"""

from __future__ import annotations

import argparse
import sys

import msgspec
import trio

from hookline.events import BargeIn
from hookline.hookspecs import hookimpl
from hookline.testing.harness import run_call, scripted_runtime
from hookline.testing.scripted import (
    HangUpStep,
    Pause,
    Say,
    ScriptedLeg,
    ScriptedLLM,
    ScriptedSTT,
    WaitForAgent,
    call_info,
)

LONG = (
    "We have openings on Monday morning. We also have Tuesday at nine. "
    "Wednesday is wide open. Thursday afternoon works too. Friday is almost full."
)


class Collector:
    def __init__(self) -> None:
        self.barge_ins: dict[str, float] = {}

    @hookimpl
    def hookline_call_event(self, call, event):
        if isinstance(event, BargeIn):
            self.barge_ins.setdefault(call.call_id, event.t)


def pct(values: list[float], q: float) -> float | None:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 3) if values else None


async def level(n: int) -> dict:
    collector = Collector()
    stt = ScriptedSTT()
    llm = ScriptedLLM(respond=lambda m: LONG if len(m) < 4 else "Sure.")
    runtime = await scripted_runtime(stt=stt, llm=llm, plugins=[collector])
    runtime.config.server.max_concurrent_calls = n
    legs: list[ScriptedLeg] = []

    async def one(i: int) -> None:
        await trio.sleep(i * 0.05)
        script = [WaitForAgent(), Say("When can you fit me in"), Pause(4)]
        script += [Say("Tuesday at nine please"), WaitForAgent(), HangUpStep()]
        leg = ScriptedLeg(call_info(), script, stt)
        legs.append(leg)
        await run_call(runtime, leg)

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)
    to_clear, leaked = [], []
    for leg in legs:
        t = collector.barge_ins.get(leg.info.call_id)
        if t is None or not leg.clears:
            continue
        clear = leg.clears[0]
        to_clear.append((clear - t) * 1000)
        # Audio of the interrupted answer handed over after the clear: anything within
        # 0.5 s (the next answer needs >= 0.6 s: endpointing + first token + first byte).
        leaked.append(sum(len(p.audio) for p in leg.received if clear < p.t < clear + 0.5))
    return {
        "calls": n,
        "barge_ins": len(to_clear),
        "decision_to_clear_ms_p50": pct(to_clear, 0.5),
        "decision_to_clear_ms_max": round(max(to_clear), 3) if to_clear else None,
        "audio_bytes_after_clear_max": max(leaked) if leaked else None,
    }


async def main(levels: list[int]) -> None:
    results = [await level(n) for n in levels]
    sys.stdout.write(msgspec.json.encode({"bench": "bargein", "levels": results}).decode() + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 20])
    trio.run(main, parser.parse_args().calls)

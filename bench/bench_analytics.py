"""Analytics: events per second into DuckDB, and what recording costs the event loop.

Two measurements, printed as one JSON line:
- ingest: N simulated calls driven through the observer hooks as fast as the trio thread
  can call them; the time until every row is in DuckDB gives events (and rows) per
  second; the hook time per event is what a call pays on its hot path.
- burst: C calls at once on the real clock, each stepping through its events, with a
  task measuring how late trio wakes it (worst and p99 scheduling delay), once with
  analytics off and once on: the difference is what the writer costs the loop.

    uv run python bench/bench_analytics.py --calls 2000 --burst 300
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import msgspec
import trio

from hookline.analytics.plugin import sink_for
from hookline.config import AnalyticsConfig
from hookline_testkit.simulate import apply_steps, observer_runtime, plan_calls, run_calls

KINDS = ("normal", "barge_in", "tools")


def counts(db: Path) -> tuple[int, int]:
    con = duckdb.connect(str(db))
    try:
        ((events,),) = con.execute("SELECT count(*) FROM events").fetchall()
        ((rows,),) = con.execute(
            "SELECT (SELECT count(*) FROM calls) + (SELECT count(*) FROM turns) "
            "+ (SELECT count(*) FROM latencies) + (SELECT count(*) FROM tool_calls) "
            "+ (SELECT count(*) FROM events)"
        ).fetchall()
    finally:
        con.close()
    return int(events), int(rows)


async def ingest(db: Path, calls: int) -> dict[str, float]:
    runtime = observer_runtime(db)
    await runtime.start()
    sink = sink_for(runtime)
    assert sink is not None
    steps = plan_calls(calls, kinds=KINDS, days=7)  # built first: only the hooks are timed
    t0 = time.perf_counter()
    apply_steps(runtime, steps)
    hooks_s = time.perf_counter() - t0
    await sink.wait_flushed()
    total_s = time.perf_counter() - t0
    await trio.to_thread.run_sync(runtime.stop)
    events, rows = counts(db)
    hook_calls = len(steps)  # every event, plus each call's start and end
    return {
        "calls": calls,
        "events": events,
        "rows": rows,
        "seconds": round(total_s, 3),
        "events_per_s": round(events / total_s),
        "rows_per_s": round(rows / total_s),
        "hook_us_per_call": round(hooks_s / hook_calls * 1e6, 2),
    }


async def burst(db: Path, calls: int, enabled: bool) -> dict[str, float]:
    runtime = observer_runtime(db, analytics=AnalyticsConfig(enabled=enabled))
    await runtime.start()
    tick = 0.002
    delays: list[float] = []

    async def heartbeat(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            t0 = trio.current_time()
            await trio.sleep(tick)
            delays.append(trio.current_time() - t0 - tick)

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        await nursery.start(heartbeat)
        await run_calls(runtime, calls, kinds=KINDS, pace=0.05)
        sink = sink_for(runtime)
        if sink is not None:
            await sink.wait_flushed()
        nursery.cancel_scope.cancel()
    elapsed = time.perf_counter() - t0
    await trio.to_thread.run_sync(runtime.stop)
    delays.sort()
    return {
        "seconds": round(elapsed, 3),
        "worst_delay_ms": round(delays[-1] * 1000, 1),
        "p99_delay_ms": round(delays[int(len(delays) * 0.99)] * 1000, 1),
        "p50_delay_ms": round(delays[len(delays) // 2] * 1000, 2),
    }


async def main(calls: int, burst_calls: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        result = {
            "bench": "analytics",
            "ingest": await ingest(d / "ingest.duckdb", calls),
            "burst": {
                "calls": burst_calls,
                "analytics_off": await burst(d / "off.duckdb", burst_calls, False),
                "analytics_on": await burst(d / "on.duckdb", burst_calls, True),
            },
        }
    sys.stdout.write(msgspec.json.encode(result).decode() + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls for the ingest run")
    parser.add_argument("--burst", type=int, default=300, help="concurrent calls in the burst")
    args = parser.parse_args()
    trio.run(main, args.calls, args.burst)

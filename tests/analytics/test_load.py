"""The writer under a burst of concurrent calls: every row lands and trio keeps ticking."""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path

import pytest
import trio

from hookline.analytics.plugin import RuntimeSink, sink_for
from hookline.analytics.writer import CALL_ROWS_WITHIN_S, WRITER_NICE, Writer
from hookline.runtime import Runtime
from hookline_testkit.simulate import observer_runtime, run_calls

log = logging.getLogger(__name__)

CALLS = 300
TICK = 0.002


async def started_with_sink(db: Path) -> tuple[Runtime, RuntimeSink]:
    """An observer runtime on `db`, started, and its analytics sink."""
    runtime = observer_runtime(db)
    await runtime.start()
    sink = sink_for(runtime)
    assert sink is not None
    return runtime, sink


async def test_a_burst_of_concurrent_calls_does_not_stall_the_event_loop(db, query):
    runtime, sink = await started_with_sink(db)
    worst = 0.0
    ticks = 0
    # Which threads did the DuckDB work: never the trio thread (the property this test
    # protects; the loop-lag figure below only backs it up, see bench/ for speed).
    writer_threads: set[int] = set()
    for name in ("_write", "_write_segment"):
        original = getattr(sink.writer, name)

        def recorded(*args, _original=original, **kwargs):
            writer_threads.add(threading.get_ident())
            return _original(*args, **kwargs)

        setattr(sink.writer, name, recorded)
    trio_thread = threading.get_ident()

    async def heartbeat(task_status=trio.TASK_STATUS_IGNORED) -> None:
        # How late does trio wake a task that asked for TICK seconds? A hook or the
        # writer holding the loop (or the GIL) for long would show up here.
        nonlocal worst, ticks
        task_status.started()
        while True:
            t0 = trio.current_time()
            await trio.sleep(TICK)
            worst = max(worst, trio.current_time() - t0 - TICK)
            ticks += 1

    async with trio.open_nursery() as nursery:
        await nursery.start(heartbeat)
        # 300 calls at once, each stepping through ~35 events half a millisecond apart.
        records = await run_calls(runtime, CALLS, kinds=("normal", "barge_in", "tools"), pace=0.05)
        await sink.wait_flushed()  # the heartbeat keeps measuring while the writer catches up
        nursery.cancel_scope.cancel()
    backlog_max = sink.writer.rows_written
    await trio.to_thread.run_sync(runtime.stop)

    events = query("SELECT count(*) FROM events")[0][0]
    log.warning(
        "burst: %d calls, %d events, worst trio scheduling delay %.1f ms over %d ticks",
        CALLS, events, worst * 1000, ticks,
    )  # fmt: skip
    print(f"\nworst trio scheduling delay {worst * 1000:.1f} ms ({events} events, {CALLS} calls)")
    assert query("SELECT count(*) FROM calls WHERE ended IS NOT NULL") == [(CALLS,)]
    assert query("SELECT count(*) FROM turns")[0][0] == sum(len(r.turns) for r in records)
    assert events > 25 * CALLS and backlog_max > events
    assert sink.writer.dropped_events == 0
    assert writer_threads and trio_thread not in writer_threads
    # A loop held by a flush of ~10,000 rows would stall it for seconds. The bound is wide
    # because this 2-core box's scheduler alone delayed the heartbeat 0.5-1.3 s while
    # other processes loaded it (a timing figure, not a speed test).
    assert worst < 2.0


async def test_raw_events_do_not_wake_the_writer_thread(db, query):
    """Only what must not wait (a call's start and end, a flush) wakes the writer: each
    wake hands the GIL to it and back, stalling the trio thread that carries the audio.
    A call's events wait in the queue for the next wake, in order, and all land."""
    runtime, sink = await started_with_sink(db)
    writer = sink.writer
    wakes = 0
    original = writer._loop_once

    def counted() -> bool:
        nonlocal wakes
        wakes += 1
        return original()

    writer._loop_once = counted  # the thread looks the method up on every pass
    await trio.sleep(0.05)  # the thread is back in its wait, now through `counted`
    before = wakes
    # Events a few milliseconds apart: an idle writer woken per event would pass once each.
    records = await run_calls(runtime, 1, kinds=("tools",), pace=0.5)
    await sink.wait_flushed()
    passes = wakes - before
    await trio.to_thread.run_sync(runtime.stop)
    events = query("SELECT count(*) FROM events")[0][0]
    assert events > 20
    assert passes < events / 3, f"{passes} writer passes for {events} events"
    assert query("SELECT count(*) FROM turns")[0][0] == len(records[0].turns)
    assert query("SELECT count(*) FROM calls WHERE ended IS NOT NULL") == [(1,)]


async def test_calls_that_come_and_go_share_their_flushes(db, query):
    """A flush is one DuckDB transaction, ~8 ms of CPU however few its rows, on the core
    that carries the audio: calls starting and ending a few a second share one within
    CALL_ROWS_WITHIN_S, instead of one flush per start and per end. Without an explicit
    flush, a call's rows still land within that time."""
    runtime, sink = await started_with_sink(db)
    writer = sink.writer
    calls = 24
    flushes_before = writer.flushes

    async def one(i: int) -> None:
        await run_calls(runtime, 1, kinds=("normal",), pace=0.01, seed=i)

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for i in range(calls):  # ~25 calls a second, each a fraction of a second long
            nursery.start_soon(one, i)
            await trio.sleep(0.04)
    elapsed = trio.current_time() - started
    # No explicit flush: the rows land on the writer's own clock.
    deadline = trio.current_time() + CALL_ROWS_WITHIN_S + 2.0
    while query("SELECT count(*) FROM calls WHERE ended IS NOT NULL") != [(calls,)]:
        assert trio.current_time() < deadline, "call rows did not land on their own"
        await trio.sleep(0.05)
    flushes = writer.flushes - flushes_before
    await trio.to_thread.run_sync(runtime.stop)
    # One flush per start and per end would be ~2 x calls; coalesced, about one per
    # CALL_ROWS_WITHIN_S of the time the calls took (and one for the last rows).
    assert flushes <= elapsed / CALL_ROWS_WITHIN_S + 3, f"{flushes} flushes for {calls} calls"


def _nice(tid: int) -> int:
    stat = Path(f"/proc/self/task/{tid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[16])


def test_the_writer_and_duckdb_run_below_the_calls_priority(tmp_path: Path) -> None:
    """On a busy core the kernel runs the trio thread first: the writer thread and the
    threads DuckDB starts from it are WRITER_NICE steps below the process."""
    if not sys.platform.startswith("linux"):
        pytest.skip("per-thread priorities are Linux's")
    before = set(os.listdir("/proc/self/task"))
    w = Writer(tmp_path / "calls.duckdb")
    w.open()
    try:
        assert w._thread is not None and w._thread.native_id is not None
        started = {int(t) for t in set(os.listdir("/proc/self/task")) - before}
        mine = _nice(threading.get_native_id())
        assert w._thread.native_id in started and len(started) > 1  # DuckDB's own too
        assert {tid: _nice(tid) for tid in started} == dict.fromkeys(
            started, min(19, mine + WRITER_NICE)
        )
        assert _nice(threading.get_native_id()) == mine  # the caller's stays
    finally:
        w.close()

"""Capacity of one `hookline serve` process, measured from the outside, real clock.

Two processes on two cores, like the peer figure in DESIGN.md ("Benchmarks (bench/)"):
- A, the system under test, pinned to CPU 0: `hookline serve CONFIG` with the real
  Twilio, Deepgram STT/TTS and OpenAI plugins over real sockets, analytics on (a temp
  DuckDB file).
- B, this script, pinned to CPU 1: the loopback fakes with zero added latency (Deepgram
  STT and TTS and OpenAI in a child process FAKES_NICE nice steps below this one, so
  their bursts of work do not hold back the callers' frames; `--fakes-together` runs
  them in this process's loop instead; Twilio REST here) and N simulated Twilio callers,
  each streaming 20 ms frames in real time: greeting, then K turns of (~1 s of tone, the
  answer heard to its end), then a hang-up. Calls start evenly over `--arrive-over-s` (2
  s). The callers are bench/lean_caller.py's (`--callers lean`, the default:
  `websockets` sans-I/O, one frame ticker for every call) or the testkit's SimCall
  (`--callers sim`, trio-websocket); the wire traffic is the same. The lean callers cost
  this core about half as much per frame. The Deepgram fakes serve their WebSockets on
  the testkit's lean transport (hookline_testkit/wsfake.py: `websockets` sans-I/O on the
  socket, no reader task per connection); on trio-websocket they were ~60% of its
  profile, and it was then 76-83% busy at 100 calls with 4 turns and a barge-in per call
  (54% after, on a shared box). Whenever `loadgen_saturated` is set, the load generator,
  not only the server, shapes the tail. With `--barge-in` each call's last turn is
  interrupted ~0.3 s into the answer: the level counts barge-ins, clears, lost barge-ins
  (no clear within 2 s: the level is not sustained) and marks received/echoed/lost.

Every installed module is compiled to bytecode first (`compile_bytecode`). One fresh
server (and fresh fakes and temp dir) per N. Before the calls, one warm-up call
(excluded from every figure), then the idle RSS. Just before SIGTERM: the server's CPU
time (user+sys, /proc/PID/stat) and peak RSS (VmHWM, /proc/PID/status). After the drain,
the per-turn latencies and end reasons are read from the server's DuckDB file.

    uv run python bench/bench_server.py --calls 10 25 50 100 150 200 --turns 3

With `--profile DIR`, py-spy (`py-spy` on PATH, else `uvx py-spy`) samples the server
for `--profile-s` seconds once every call has started, every thread, pausing it for
each sample (`profile_server` says why): DIR/profile-N.txt holds the collapsed stacks,
and the level's JSON gets the top functions by own and by inclusive share of the
samples. With `--count-steps` the server runs under a trio Instrument and the JSON gets
trio task steps and I/O waits per media frame sent (counts, not timings). With
`--gc-log` it times the server's garbage collections: `gc_all_up` per generation while
all calls were up. `--stt-chunk-ms N` sets the server's `[stt.deepgram] send_chunk_ms`.
`--profile-loadgen` (with `--profile`) samples this process too: DIR/loadgen-N.txt,
`loadgen_profile` in the JSON. `--server relay` puts bench/relay.py on the server's core
instead of hookline: a bare relay doing the same wire work with no runtime, the floor
hookline is compared with (docs/capacity.md); it writes no analytics, so its levels have
the caller-side figures and CPU, no `overhead_ms_*`. `--beside-relay` runs the relay
first and then hookline at each N (fresh processes, minutes apart): each hookline level
gets the relay's under `relay` and `cpu_vs_relay`, the ratio of their CPU per
call-minute, which moves far less with this host's speed than either figure.

Progress goes to stderr; one JSON line to stdout: per N, p50/p99 `runtime_overhead` and
`voice_to_voice` (ms, as the server recorded them), the caller-side answer time, CPU
seconds per call-minute, MB per call, completed/failed calls; `capacity` is the last N
before the first level whose p99 overhead passes 20 ms (or that lost calls).
`overhead_ms_p99_all_up` is the p99 over the turns taken while every call of the level
was up (from ALL_UP_SETTLE_S after the last call started to the first hang-up): N
concurrent calls without the arrival burst and the hang-ups. With `--arrive-over-s 30
--turns 12` that is ~27 s of each level.
`server_cpu_util_all_up` is the server's share of its core over that same window (the
whole-run `server_cpu_util` averages in the ramps). `loadgen_late_per_s` counts how often
the callers' loop woke over 5 ms late: its late frames then go out at once.
`host_reference_ms` is the CPU time of a fixed loop after each level: this VM's speed
drifts between minutes (the same loop took 75-128 ms), so compare CPU figures with it
alongside.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import duckdb
import httpx
import msgspec
import trio
from lean_caller import CallOutcome, Ticker, lean_call, one_call

from hookline.audio import tone_mulaw
from hookline_testkit.fake_deepgram_stt import FakeDeepgramSTT, fake_deepgram_stt
from hookline_testkit.fake_deepgram_tts import FakeDeepgramTTS, serve_fake_deepgram_tts
from hookline_testkit.fake_openai import FakeOpenAI, fake_openai, text
from hookline_testkit.stack import FakeStack
from hookline_testkit.twilio_sim import TwilioRestFake, TwilioSimulator, twilio_rest_fake

TOKEN = "bench-twilio-auth-token-0123456789"
GREETING = "Thanks for calling. How can I help?"
ANSWER = "Sure, we can do that. What day works best for you?"
CALLER_WORDS = "I need an oil change"
CHARS_PER_SECOND = 15.0  # TTS fake: audio length follows the text, about speaking pace
SAY_S = 1.0
ARRIVE_OVER_S = 2.0  # `--arrive-over-s`: the level's calls start evenly over this
ALL_UP_SETTLE_S = 2.0  # after the last call starts, before its set-up counts as done
OVERHEAD_LIMIT_MS = 20.0
SERVER_CPU = 0
LOADGEN_CPU = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")
WORKERS = 1  # `--workers`: with more than one, nothing is pinned (they need every core)
PROFILE_DIR: Path | None = None  # `--profile DIR`
PROFILE_LOADGEN = False  # `--profile-loadgen`: sample this process too (DIR/loadgen-N.txt)
PROFILE_S = 12.0  # `--profile-s`
PROFILE_DELAY_S = 3.0  # after the last call starts (ARRIVE_OVER_S): all are up by then
PROFILE_TOP = 25
STT_SETTINGS = ""  # extra `[stt.deepgram]` lines (`--stt-chunk-ms`)
COUNT_STEPS = False  # `--count-steps`
GC_LOG = False  # `--gc-log`
SERVER = "hookline"  # `--server hookline|relay`: bench/relay.py is the bare-relay floor
BESIDE_RELAY = False  # `--beside-relay`: the relay runs right before hookline at each N
CALLERS = "lean"  # `--callers lean|sim`: bench/lean_caller.py, or the testkit's SimCall
KEEP_CORE_AWAKE = False  # `--keep-core-awake`
BARGE_IN = False  # `--barge-in`: each call's last turn is interrupted
THINK_S = 0.0  # `--think-s`: a random silence of up to this before each turn
FAKES_APART = True  # `--fakes-together` sets False: the fakes in this process's loop
LOADGEN_LATE_S = 0.005  # `loadgen_late_per_s`: the callers' loop woke this much late
FAKES_NICE = 5  # the fakes' child runs this many nice steps below the callers

# `--count-steps` and `--gc-log`: the server runs under this wrapper (argv: the steps
# file and the collections file, "-" for neither). With a steps file it adds a trio
# Instrument counting task steps (a task resumed by the scheduler) and I/O waits
# (scheduler passes that asked epoll for work) and writes the two counts to the file at
# most twice a second; counts do not depend on what else runs on the core, unlike CPU
# seconds. With a collections file it times every garbage collection of the process (a
# `gc.callbacks` hook: the CPU time of the thread that ran it, which holds the GIL
# throughout) and writes them when the server exits: "wall-clock generation seconds".
SERVER_WRAPPER = """
import atexit, gc, sys, time, trio
from hookline.cli import main
steps_out, gc_out = sys.argv.pop(1), sys.argv.pop(1)
if steps_out != "-":
    class Count(trio.abc.Instrument):
        steps = waits = 0
        written = 0.0
        def before_task_step(self, task):
            self.steps += 1
        def before_io_wait(self, timeout):
            self.waits += 1
            now = time.monotonic()
            if now - self.written > 0.5:
                self.written = now
                with open(steps_out, "w") as f:
                    f.write(f"{self.steps} {self.waits}")
    run = trio.run
    trio.run = lambda *a, **k: run(*a, instruments=[*k.pop("instruments", ()), Count()], **k)
if gc_out != "-":
    started, collections = [0.0], []
    def timed(phase, info):
        if phase == "start":
            started[0] = time.thread_time()
        else:
            collections.append((time.time(), info["generation"], time.thread_time() - started[0]))
    gc.callbacks.append(timed)
    def write():
        with open(gc_out, "w") as f:
            f.writelines(f"{t:.3f} {g} {s:.6f}\\n" for t, g, s in collections)
    atexit.register(write)
sys.exit(main(sys.argv[1:]))
"""


def gc_between(path: Path, t0: float, t1: float) -> dict[str, dict[str, float]]:
    """Per generation, the collections `--gc-log` saw in [t0, t1] (wall clock): how many,
    their largest and mean CPU time (ms), and the CPU they took per second of it."""
    times: dict[int, list[float]] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            when, generation, seconds = line.split()
            if t0 <= float(when) <= t1:
                times.setdefault(int(generation), []).append(float(seconds) * 1000)
    span = max(t1 - t0, 1e-9)
    return {
        str(g): {
            "n": len(ms),
            "max_ms": round(max(ms), 2),
            "mean_ms": round(sum(ms) / len(ms), 2),
            "ms_per_s": round(sum(ms) / span, 2),
        }
        for g, ms in sorted(times.items())
    }


def progress(msg: str) -> None:
    sys.stderr.write(f"[bench_server {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 2)


# ---------------------------------------------------------------------- /proc readings


def tree(pid: int) -> list[int]:
    """The process and its children (the `--workers` supervisor's worker processes)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [pid, *(int(c) for c in f.read().split())]
    except OSError:
        return [pid]


def proc_cpu_s(pid: int) -> float:
    """user + sys CPU seconds of a process and its children (all their threads)."""
    total = 0
    for each in tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{each}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def proc_counters(pid: int, steps_file: Path | None) -> dict[str, int]:
    """The server's context switches (voluntary: it waited for I/O; nonvoluntary: the
    core was taken from it, by other processes on a shared box) and, with
    `--count-steps`, its trio task steps and I/O waits."""
    total = {"voluntary_ctxt_switches": 0, "nonvoluntary_ctxt_switches": 0}
    for each in tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{each}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in total:
                    total[key] += int(value.split()[0])
    if steps_file is not None:
        with contextlib.suppress(OSError, ValueError):
            steps, waits = steps_file.read_text().split()
            total["trio_task_steps"], total["trio_io_waits"] = int(steps), int(waits)
    return total


def proc_status_mb(pid: int, key: str) -> float:
    total = 0.0
    for each in tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{each}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    total += int(line.split()[1]) / 1024
    return total


# ---------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


def write_config(
    path: Path,
    *,
    port: int,
    db: Path,
    max_calls: int,
    stt: FakeDeepgramSTT,
    tts: FakeDeepgramTTS,
    llm: FakeOpenAI,
    rest: TwilioRestFake,
) -> None:
    providers = FakeStack(stt=stt, tts=tts, llm=llm, rest=rest, auth_token=TOKEN).providers_toml()
    providers = providers.replace("[stt.deepgram]\n", f"[stt.deepgram]\n{STT_SETTINGS}", 1)
    path.write_text(
        f"""
[agent]
name = "Riverside Auto Service (bench)"
greeting = "{GREETING}"

{providers}
[server]
host = "127.0.0.1"
port = {port}
max_concurrent_calls = {max_calls}
drain_timeout_s = 5.0

[analytics]
enabled = true
database = "{db}"
"""
    )


def spin_idle_preexec() -> None:
    """In the spinner between fork and exec: on the server's core, at SCHED_IDLE."""
    os.sched_setaffinity(0, {SERVER_CPU})
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


@contextlib.contextmanager
def core_kept_awake() -> Iterator[None]:
    """With `--keep-core-awake`: a busy loop on the server's core at SCHED_IDLE, which
    runs only when nothing else there wants the CPU. It keeps the core from going idle.
    On this VM an idle vCPU halts, and waking it costs every task hop that waits on it.
    The server's CPU figures are its own process's and do not count the spinner."""
    if not KEEP_CORE_AWAKE:
        yield
        return
    spinner = subprocess.Popen(
        [sys.executable, "-c", "while True: pass"], preexec_fn=spin_idle_preexec
    )
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def server_preexec() -> None:
    """In the child between fork and exec: pin it to its CPU (one worker only)."""
    if WORKERS == 1:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {SERVER_CPU})


async def wait_healthy(url: str, proc: trio.Process, limit_s: float = 60.0) -> None:
    async with httpx.AsyncClient() as client:
        with trio.fail_after(limit_s):
            while True:
                if proc.returncode is not None:
                    raise RuntimeError(f"server exited with {proc.returncode} before healthy")
                try:
                    if (await client.get(url, timeout=2)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.05)


async def wait_exit(proc: trio.Process, limit_s: float) -> None:
    with trio.move_on_after(limit_s):
        await proc.wait()


async def stop_server(proc: trio.Process, limit_s: float = 60.0) -> float:
    """SIGTERM (drain, flush analytics), then wait; SIGKILL past `limit_s`. Returns the
    seconds the shutdown took."""
    t0 = time.perf_counter()
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        await wait_exit(proc, limit_s)
        if proc.returncode is None:
            progress("server did not stop after SIGTERM: killing it")
            proc.kill()
            await wait_exit(proc, 10)
    return time.perf_counter() - t0


@contextlib.asynccontextmanager
async def provider_fakes(answer: str) -> AsyncIterator[tuple]:
    """The Deepgram STT and TTS and OpenAI fakes, in this process."""
    async with (
        fake_deepgram_stt() as stt,
        serve_fake_deepgram_tts(
            ttfb_s=0, chars_per_second=CHARS_PER_SECOND, flush_limit=10_000
        ) as tts,
        fake_openai(ttft_s=0, tokens_per_s=0) as llm,
    ):
        stt.fallback_text = CALLER_WORDS
        llm.responder = lambda _request: text(answer)
        yield stt, tts, llm


async def serve_fakes() -> None:
    """`--serve-fakes` (the child of `fakes_apart`): the provider fakes until stdin closes.
    Their addresses and keys go to stdout as one JSON line."""
    async with provider_fakes(ANSWER) as (stt, tts, llm):
        where = {
            "stt": {"url": stt.url, "api_key": stt.api_key},
            "tts": {"url": tts.url, "base_url": tts.base_url, "api_key": tts.api_key},
            "llm": {"url": llm.url, "api_key": llm.api_key},
        }
        sys.stdout.write(msgspec.json.encode(where).decode() + "\n")
        sys.stdout.flush()
        await trio.to_thread.run_sync(sys.stdin.buffer.read)  # EOF: the parent is done


def fakes_preexec() -> None:
    """In the fakes' child between fork and exec: beside the callers, FAKES_NICE below."""
    os.sched_setaffinity(0, {LOADGEN_CPU})
    os.nice(FAKES_NICE)


@contextlib.asynccontextmanager
async def fakes_apart() -> AsyncIterator[tuple]:
    """The provider fakes in a child process on the callers' core, at a lower priority.

    In one trio loop with the callers, a burst of fake work (a TTS answer, 150 calls'
    audio to parse) held the frame ticker back: at 150 calls it woke >10 ms late ~25
    times a second and then sent the late frames at once, so the server got bursts no
    Twilio sends (docs/capacity.md). In their own process the kernel runs the ticker as
    soon as it wakes."""
    proc = await trio.lowlevel.open_process(
        [sys.executable, __file__, "--serve-fakes"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        preexec_fn=fakes_preexec,
    )
    try:
        line = b""
        with trio.fail_after(30):
            while not line.endswith(b"\n"):
                chunk = await proc.stdout.receive_some()
                if not chunk:
                    raise RuntimeError(f"the fakes' process exited ({await proc.wait()})")
                line += chunk
        where = msgspec.json.decode(line)
        yield (
            SimpleNamespace(**where["stt"]),
            SimpleNamespace(**where["tts"]),
            SimpleNamespace(**where["llm"]),
            proc.pid,
        )
    finally:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await proc.stdin.aclose()
        with trio.move_on_after(10) as waited:
            await proc.wait()
        if waited.cancelled_caught:
            proc.kill()


@contextlib.asynccontextmanager
async def fakes(answer: str) -> AsyncIterator[tuple]:
    """(stt, tts, llm, rest, pid of the process serving stt/tts/llm)."""
    async with twilio_rest_fake(auth_token=TOKEN) as rest:
        if FAKES_APART:
            async with fakes_apart() as (stt, tts, llm, pid):
                yield stt, tts, llm, rest, pid
        else:
            async with provider_fakes(answer) as (stt, tts, llm):
                yield stt, tts, llm, rest, os.getpid()


# ---------------------------------------------------------------------- the callers


def open_call(sim: TwilioSimulator, ticker: Ticker, url: str):
    """How `--callers` places a call: a lean caller, or the testkit's SimCall."""
    if CALLERS == "sim":
        return lambda: sim.call(url)
    return lambda: lean_call(sim, ticker, url)


@contextlib.asynccontextmanager
async def ticking(ticker: Ticker) -> AsyncIterator[None]:
    """The lean callers' frame ticker, running for the block."""
    async with trio.open_nursery() as nursery:
        await nursery.start(ticker.run)
        yield
        nursery.cancel_scope.cancel()


async def watch_level(
    worst: list[float], pid: int, samples: list[tuple[float, float]], scope: trio.CancelScope
) -> None:
    """Until `scope` is cancelled: how late this process's own loop wakes up (a saturated
    caller side skews timing) and the server's CPU (for its load while all calls are up)."""
    with scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_lag_probe, worst)
            nursery.start_soon(_sample_cpu, pid, samples)


async def _sample_cpu(pid: int, samples: list[tuple[float, float]]) -> None:
    """(wall time, the server's CPU seconds) twice a second."""
    while True:
        samples.append((time.time(), proc_cpu_s(pid)))
        await trio.sleep(0.5)


def cpu_util_between(samples: list[tuple[float, float]], t0: float, t1: float) -> float | None:
    """The server's CPU use per wall second over the samples inside [t0, t1]."""
    inside = [s for s in samples if t0 <= s[0] <= t1]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    (w0, c0), (w1, c1) = inside[0], inside[-1]
    return (c1 - c0) / (w1 - w0)


async def _lag_probe(worst: list[float]) -> None:
    """worst: [the worst lag, seconds into the level when it happened, how many wake-ups
    were over LOADGEN_LATE_S late]."""
    start = trio.current_time()
    while True:
        before = trio.current_time()
        await trio.sleep(0.01)
        now = trio.current_time()
        lag = now - before - 0.01
        if lag > LOADGEN_LATE_S:
            worst[2] += 1
        if lag > worst[0]:
            worst[0], worst[1] = lag, now - start


# ---------------------------------------------------------------------- py-spy


def py_spy() -> list[str]:
    found = shutil.which("py-spy")
    return [found] if found else ["uvx", "py-spy"]


async def profile_server(
    pid: int, out: Path, *, delay_s: float, seconds: float, pause: bool = True
) -> None:
    """Sample a process (every thread) into collapsed stacks at `out`.

    With `pause`, py-spy stops the process for each sample (100 a second). Without it
    (`--nonblocking`, the server's way until 2026-12-01) it reads the stacks while they
    change: at 150 calls 439 of 3,290 samples failed and many were torn
    (`trio.current_time` "called" from `UserDict.__contains__`), which made the
    inclusive shares wrong. The load generator is sampled without pausing: stopping it
    would hold back the callers' frames."""
    await trio.sleep(delay_s)
    command = [
        *py_spy(), "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "100",
        *([] if pause else ["--nonblocking"]), "--threads", "--format", "raw", "-o", str(out),
    ]  # fmt: skip
    done = await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False)
    if done.returncode != 0:
        progress(
            f"py-spy failed ({done.returncode}): {done.stderr.decode(errors='replace')[-500:]}"
        )


def _frame_name(frame: str) -> str:
    """`fn (/long/path/module.py:123)` -> `fn (module.py)`: one entry per function."""
    name, sep, where = frame.partition(" (")
    if not sep:
        return frame
    return f"{name} ({where.rsplit(':', 1)[0].rsplit('/', 1)[-1].rstrip(')')})"


def profile_top(path: Path, top: int = PROFILE_TOP) -> dict:
    """Own and inclusive share (%) of the samples per function in collapsed stacks."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame_name(f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n

    def share(table: dict[str, int]) -> list[list]:
        ranked = sorted(table.items(), key=lambda kv: -kv[1])[:top]
        return [[name, round(100 * n / total, 1)] for name, n in ranked]

    return {"samples": total, "own_pct": share(own), "inclusive_pct": share(inclusive)}


# ---------------------------------------------------------------------- reading DuckDB


def read_db(db: Path, exclude: set[str]) -> dict:
    """The calls and latencies in `db`, or in every worker's file (calls.workerN.duckdb)."""
    calls: list = []
    rows: list = []
    for path in [db] if db.exists() else sorted(db.parent.glob(f"{db.stem}.worker*{db.suffix}")):
        con = duckdb.connect(str(path), read_only=True)
        try:
            calls += con.execute(
                "SELECT id, provider_call_id, end_reason, duration_s FROM calls"
            ).fetchall()
            rows += con.execute("SELECT call_id, metric, ms, epoch(ts) FROM latencies").fetchall()
        finally:
            con.close()
    keep = {cid for cid, sid, _, _ in calls if sid not in exclude}
    metrics: dict[str, list[float]] = {"runtime_overhead": [], "voice_to_voice": []}
    overhead_at: list[tuple[float, float]] = []  # (when, ms): the overhead of each turn
    for call_id, metric, ms, when in rows:
        if call_id in keep:
            metrics.setdefault(metric, []).append(float(ms))
            if metric == "runtime_overhead" and when is not None:
                overhead_at.append((float(when), float(ms)))
    reasons: dict[str, int] = {}
    seconds = 0.0
    for cid, _, reason, duration in calls:
        if cid in keep:
            key = reason or "active"
            reasons[key] = reasons.get(key, 0) + 1
            seconds += duration or 0.0
    return {
        "metrics": metrics,
        "overhead_at": overhead_at,
        "end_reasons": reasons,
        "call_seconds": seconds,
    }


# ---------------------------------------------------------------------- one level


async def run_level(n: int, turns: int, root: Path, server: str) -> dict:
    tone = tone_mulaw(SAY_S)
    call_timeout_s = 30.0 + turns * (15.0 + THINK_S)
    level_timeout_s = ARRIVE_OVER_S + call_timeout_s + 15.0
    workdir = Path(tempfile.mkdtemp(prefix=f"n{n}-", dir=root))
    db = workdir / "calls.duckdb"
    config = workdir / "agent.toml"
    log_path = workdir / "server.log"
    port = free_port()
    level: dict = {"calls": n}
    ticker = Ticker()
    async with fakes(ANSWER) as (stt, tts, llm, rest, fakes_pid), ticking(ticker):
        write_config(
            config, port=port, db=db, max_calls=n + 10, stt=stt, tts=tts, llm=llm, rest=rest
        )
        stack = FakeStack(stt=stt, tts=tts, llm=llm, rest=rest, auth_token=TOKEN)
        env = {**os.environ, **stack.env()}
        sim = TwilioSimulator(auth_token=TOKEN, rest=rest, timeout=30.0)
        url = f"http://127.0.0.1:{port}/twilio/voice"
        place_call = open_call(sim, ticker, url)
        steps_file = workdir / "trio-steps.txt" if COUNT_STEPS else None
        gc_file = workdir / "gc.txt" if GC_LOG else None
        launcher = (
            ["-c", SERVER_WRAPPER, str(steps_file or "-"), str(gc_file or "-")]
            if steps_file or gc_file
            else ["-m", "hookline.cli"]
        )
        command = [*launcher, "serve", str(config), "--workers", str(WORKERS)]
        if server == "relay":
            command = [str(Path(__file__).with_name("relay.py")), "--port", str(port)]
            env |= {"RELAY_STT_URL": stt.url, "RELAY_TTS_URL": tts.url, "RELAY_LLM_URL": llm.url}
        with log_path.open("wb") as log:
            proc = await trio.lowlevel.open_process(
                [sys.executable, *command],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
                preexec_fn=server_preexec,
            )
        try:
            await wait_healthy(f"http://127.0.0.1:{port}/readyz", proc)
        except BaseException:
            await stop_server(proc)
            tail = log_path.read_text(errors="replace")[-2000:]
            progress(f"N={n}: server not healthy (exit {proc.returncode}); log tail:\n{tail}")
            raise
        try:
            level["server_affinity"] = sorted(os.sched_getaffinity(proc.pid))
            # Warm-up: the first call pays lazy imports and connection set-up; not counted.
            warm = await one_call(place_call, turns=1, tone=tone, timeout_s=call_timeout_s)
            if warm.outcome != "completed":
                raise RuntimeError(f"warm-up call failed: {warm.error}")
            await trio.sleep(1.0)
            idle_cpu0 = proc_cpu_s(proc.pid)
            await trio.sleep(2.0)
            idle_cpu_util = (proc_cpu_s(proc.pid) - idle_cpu0) / 2.0
            idle_rss = proc_status_mb(proc.pid, "VmRSS")
            cpu0 = proc_cpu_s(proc.pid)
            counters0 = proc_counters(proc.pid, steps_file)
            own_cpu0 = time.process_time()
            apart = fakes_pid != os.getpid()
            fakes_cpu0 = proc_cpu_s(fakes_pid) if apart else 0.0
            wall0 = time.perf_counter()
            results: list[CallOutcome] = [CallOutcome() for _ in range(n)]
            spans: list[tuple[float, float]] = []  # (placed, ended), wall clock, per call
            worst_lag = [0.0, 0.0, 0]
            cpu_samples: list[tuple[float, float]] = []

            async def place(i: int) -> None:
                await trio.sleep(i * ARRIVE_OVER_S / n)
                placed = time.time()
                results[i] = await one_call(
                    place_call,
                    turns=turns,
                    tone=tone,
                    timeout_s=call_timeout_s,
                    barge_in=BARGE_IN,
                    think_s=THINK_S,
                    seed=i,
                )
                spans.append((placed, time.time()))

            timed_out = True
            with trio.move_on_after(level_timeout_s):
                async with trio.open_nursery() as outer:
                    probe_scope = trio.CancelScope()
                    outer.start_soon(watch_level, worst_lag, proc.pid, cpu_samples, probe_scope)
                    profile_delay_s = ARRIVE_OVER_S + PROFILE_DELAY_S  # all calls up
                    if PROFILE_DIR is not None:
                        profile_out = PROFILE_DIR / f"profile-{n}.txt"
                        outer.start_soon(
                            partial(
                                profile_server,
                                proc.pid,
                                profile_out,
                                delay_s=profile_delay_s,
                                seconds=PROFILE_S,
                            )
                        )
                    if PROFILE_DIR is not None and PROFILE_LOADGEN:
                        outer.start_soon(
                            partial(
                                profile_server,
                                os.getpid(),
                                PROFILE_DIR / f"loadgen-{n}.txt",
                                delay_s=profile_delay_s,
                                seconds=PROFILE_S,
                                pause=False,
                            )
                        )
                    async with trio.open_nursery() as nursery:
                        for i in range(n):
                            nursery.start_soon(place, i)
                    probe_scope.cancel()  # a running py-spy is waited for
                timed_out = False
            wall = time.perf_counter() - wall0
            cpu = proc_cpu_s(proc.pid) - cpu0
            await trio.sleep(
                1.0 if COUNT_STEPS else 0
            )  # the counts file is rewritten twice a second
            counters = {
                k: v - counters0.get(k, 0) for k, v in proc_counters(proc.pid, steps_file).items()
            }
            own_cpu = time.process_time() - own_cpu0
            fakes_cpu = proc_cpu_s(fakes_pid) - fakes_cpu0 if apart else None
            load_cpu = own_cpu + (fakes_cpu or 0.0)  # the callers' core: callers and fakes
            peak_rss = proc_status_mb(proc.pid, "VmHWM")
        finally:
            stop_s = await stop_server(proc)
    server_rc = proc.returncode
    if server_rc != 0:
        tail = log_path.read_text(errors="replace")[-2000:]
        progress(f"N={n}: server exited with {server_rc}; log tail:\n{tail}")
    if PROFILE_DIR is not None and (PROFILE_DIR / f"profile-{n}.txt").exists():
        level["profile"] = profile_top(PROFILE_DIR / f"profile-{n}.txt")
    if PROFILE_DIR is not None and (PROFILE_DIR / f"loadgen-{n}.txt").exists():
        level["loadgen_profile"] = profile_top(PROFILE_DIR / f"loadgen-{n}.txt")
    data = read_db(db, exclude={warm.call_sid} if warm.call_sid else set())
    overhead = data["metrics"]["runtime_overhead"]
    # The turns taken while every call of the level was up: after the last call started
    # (and ALL_UP_SETTLE_S for its set-up), before the first one ended. This is the load
    # of N concurrent calls, without the arrival burst or the hang-ups around it.
    all_up: list[float] = []
    if len(spans) == n:
        up_from = max(p for p, _ in spans) + ALL_UP_SETTLE_S
        up_to = min(e for _, e in spans)
        all_up = [ms for when, ms in data["overhead_at"] if up_from <= when <= up_to]
        level["all_up_s"] = round(max(0.0, up_to - up_from), 1)
        # The level's own load: the whole-run figure averages in the ramps.
        util = cpu_util_between(cpu_samples, up_from, up_to)
        level["server_cpu_util_all_up"] = round(util, 3) if util is not None else None
        if GC_LOG:
            level["gc_all_up"] = gc_between(workdir / "gc.txt", up_from, up_to)
    v2v = data["metrics"]["voice_to_voice"]
    answers = [ms for r in results for ms in r.answer_ms]
    greetings = [r.greeting_ms for r in results if r.greeting_ms is not None]
    call_minutes = data["call_seconds"] / 60 or sum(r.seconds for r in results) / 60
    errors: dict[str, int] = {}
    for r in results:
        if r.error:
            errors[r.error] = errors.get(r.error, 0) + 1
    completed = sum(r.outcome == "completed" for r in results)
    frames_sent = sum(r.frames_sent for r in results)
    counted = {
        key: sum(getattr(r, key) for r in results)
        for key in (
            "barge_ins",
            "barge_ins_lost",
            "clears",
            "marks_received",
            "marks_echoed",
            "marks_lost",
        )
    }
    server_ok = sum(
        v for k, v in data["end_reasons"].items() if k.split(":")[0] in ("caller_hangup",)
    )
    level.update(
        {
            "turns_measured": len(overhead),
            "overhead_ms_p50": pct(overhead, 0.5),
            "overhead_ms_p99": pct(overhead, 0.99),
            "overhead_ms_max": pct(overhead, 1.0),
            "turns_all_up": len(all_up),
            "overhead_ms_p50_all_up": pct(all_up, 0.5),
            "overhead_ms_p99_all_up": pct(all_up, 0.99),
            "voice_to_voice_ms_p50": pct(v2v, 0.5),
            "voice_to_voice_ms_p99": pct(v2v, 0.99),
            "metrics_ms_p50": {k: pct(v, 0.5) for k, v in sorted(data["metrics"].items())},
            "metrics_ms_p99": {k: pct(v, 0.99) for k, v in sorted(data["metrics"].items())},
            "caller_answer_ms_p50": pct(answers, 0.5),
            "caller_answer_ms_p99": pct(answers, 0.99),
            "caller_greeting_ms_p50": pct(greetings, 0.5),
            "caller_greeting_ms_p99": pct(greetings, 0.99),
            "completed": completed,
            "failed": n - completed,
            "errors": errors,
            "server_end_reasons": data["end_reasons"],
            "server_calls_ok": server_ok,
            "call_minutes": round(call_minutes, 2),
            "server_cpu_s": round(cpu, 2),
            "server_cpu_util": round(cpu / wall, 3) if wall else None,
            "server_idle_cpu_util": round(idle_cpu_util, 3),
            "cpu_s_per_call_minute": round(cpu / call_minutes, 3) if call_minutes else None,
            "per_call_minute": {
                k: round(v / call_minutes) if call_minutes else None for k, v in counters.items()
            },
            "media_frames_sent": frames_sent,
            **counted,
            "per_media_frame": {
                k: round(v / frames_sent, 2) if frames_sent else None for k, v in counters.items()
            },
            "cpu_ms_per_media_frame": round(1000 * cpu / frames_sent, 3) if frames_sent else None,
            "idle_rss_mb": round(idle_rss, 1),
            "peak_rss_mb": round(peak_rss, 1),
            "rss_mb_per_call": round((peak_rss - idle_rss) / n, 2),
            "loadgen_cpu_util": round(load_cpu / wall, 3) if wall else None,
            "fakes_apart": apart,
            "fakes_cpu_util": (
                round(fakes_cpu / wall, 3) if wall and fakes_cpu is not None else None
            ),
            # Per frame, the load generator's cost does not depend on what else the box runs.
            "loadgen_cpu_ms_per_media_frame": (
                round(1000 * load_cpu / frames_sent, 3) if frames_sent else None
            ),
            # How late the callers' loop woke (its frames go out late, then at once).
            "loadgen_worst_lag_ms": round(worst_lag[0] * 1000, 1),
            "loadgen_worst_lag_at_s": round(worst_lag[1], 1),  # into the level (calls start)
            "loadgen_late_per_s": round(worst_lag[2] / wall, 1) if wall else None,
            # One core drives every caller and fake: past this the figures are the
            # load generator's limit, not the server's.
            "loadgen_saturated": wall > 0 and (load_cpu / wall > 0.9 or worst_lag[0] > 0.1),
            "wall_s": round(wall, 1),
            "host_reference_ms": host_reference_ms(),
            "timed_out": timed_out,
            "shutdown_s": round(stop_s, 1),
            "server_exit": server_rc,
        }
    )
    return level


def host_reference_ms() -> float:
    """CPU ms of a fixed pure-Python loop on this process's core. This VM's speed moves
    from one minute to the next (other tenants of the host: this loop took 75-128 ms
    over one evening), and every CPU figure of a level moves with it; the reference is
    printed beside them so that two runs can be compared."""
    started = time.process_time()
    total = 0
    for i in range(2_000_000):
        total += i
    return round((time.process_time() - started) * 1000, 1)


def sustained(level: dict) -> bool:
    p99 = level["overhead_ms_p99"]
    return (
        p99 is not None
        and p99 <= OVERHEAD_LIMIT_MS
        and level["failed"] == 0
        and level["barge_ins_lost"] == 0
        and not level["timed_out"]
    )


def compile_bytecode() -> None:
    """Compile every installed module to bytecode first, as `pip install` does for a
    deployment. Without .pyc files (PYTHONDONTWRITEBYTECODE is set on some machines, and
    a fresh source checkout has none) each server process compiles the modules it
    imports lazily in the middle of the calls: a 150-200 ms stall of the trio thread
    that shows as the level's p99, and differs between two checkouts of the same code."""
    import hookline

    roots = {sysconfig.get_paths()["purelib"], str(Path(hookline.__file__).parent.parent)}
    # The workspace's editable installs (core, plugins, testkit) are on sys.path.
    roots |= {p for p in sys.path if Path(p, "hookline_testkit").is_dir() or "/plugins/" in p}
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j0", *sorted(roots)],
        stdout=subprocess.DEVNULL,
        check=False,
    )


SUMMARY = (  # a level's progress line
    "completed",
    "failed",
    "overhead_ms_p50",
    "overhead_ms_p99",
    "overhead_ms_p99_all_up",
    "all_up_s",
    "voice_to_voice_ms_p99",
    "server_cpu_util",
    "server_cpu_util_all_up",
    "cpu_s_per_call_minute",
    "rss_mb_per_call",
    "loadgen_cpu_util",
    "loadgen_worst_lag_ms",
    "loadgen_late_per_s",
    "wall_s",
    "host_reference_ms",
)


async def one_level(n: int, turns: int, root: Path, server: str) -> dict:
    progress(f"N={n}: starting {server} ({turns} turns per call)")
    try:
        level = await run_level(n, turns, root, server)
    except Exception as e:  # one broken level is reported, the sweep goes on
        progress(f"N={n}: level failed:\n{''.join(traceback.format_exception(e))}")
        return {"calls": n, "error": f"{type(e).__name__}: {e}"}
    progress(f"N={n} {server}: " + ", ".join(f"{k}={level.get(k)}" for k in SUMMARY))
    return level


def cpu_ratio(level: dict, relay: dict) -> float | None:
    """hookline's CPU per call-minute over the relay's, both measured minutes apart: this
    host's speed drifts by more than a third within an evening, the ratio far less."""
    ours, floor = level.get("cpu_s_per_call_minute"), relay.get("cpu_s_per_call_minute")
    return round(ours / floor, 2) if ours and floor else None


async def main(levels: list[int], turns: int) -> None:
    compile_bytecode()
    results: list[dict] = []
    capacity: int | None = 0
    first_over: int | None = None
    with tempfile.TemporaryDirectory(prefix="hookline-bench-server-") as tmp, core_kept_awake():
        for n in levels:
            relay = await one_level(n, turns, Path(tmp), "relay") if BESIDE_RELAY else None
            level = await one_level(n, turns, Path(tmp), SERVER)
            if relay is not None:
                level["relay"] = relay
                level["cpu_vs_relay"] = cpu_ratio(level, relay)
            results.append(level)
            if first_over is None:
                if "error" not in level and sustained(level):
                    capacity = n
                else:
                    first_over = n
    out = {
        "bench": "server",
        "nproc": os.cpu_count(),
        "workers": WORKERS,
        "pinned": {"server_cpu": SERVER_CPU, "loadgen_cpu": LOADGEN_CPU} if WORKERS == 1 else None,
        "turns": turns,
        "server": SERVER,  # `--server`: hookline, or the bare relay (bench/relay.py)
        "beside_relay": BESIDE_RELAY,  # each level's "relay": the relay's run just before
        "callers": CALLERS,  # `--callers`: lean (bench/lean_caller.py) or sim (SimCall)
        "barge_in": BARGE_IN,
        "think_s": THINK_S,
        "overhead_limit_ms": OVERHEAD_LIMIT_MS,
        "levels": results,
        "capacity": capacity,
        "first_level_over_limit": first_over,
    }
    sys.stdout.write(msgspec.json.encode(out).decode() + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[10, 25, 50, 100, 150, 200])
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="`hookline serve --workers N`; above 1 the server and the callers are not "
        "pinned (on a 2-core box they then share both cores)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample the server with py-spy during each level; collapsed stacks go to "
        "DIR/profile-N.txt, the top functions into the JSON",
    )
    parser.add_argument("--profile-s", type=float, default=PROFILE_S)
    parser.add_argument(
        "--count-steps",
        action="store_true",
        help="run the server under a trio Instrument counting task steps and I/O waits "
        "(per media frame in the JSON; the instrument costs some CPU itself)",
    )
    parser.add_argument(
        "--gc-log",
        action="store_true",
        help="time the server's garbage collections; `gc_all_up` in the JSON gives, per "
        "generation, those while all N calls were up (count, largest and mean CPU ms, "
        "CPU ms per second); one server process (--workers 1)",
    )
    parser.add_argument(
        "--stt-chunk-ms",
        type=int,
        help="[stt.deepgram] send_chunk_ms for the server (default: the plugin's)",
    )
    parser.add_argument(
        "--server",
        choices=("hookline", "relay"),
        default="hookline",
        help="what runs on the server's core: `hookline serve` (default) or bench/relay.py, "
        "a bare relay doing the same wire work with no engine (the floor); the relay "
        "writes no analytics, so its level has the caller-side figures only",
    )
    parser.add_argument(
        "--beside-relay",
        action="store_true",
        help="at each N, run the bare relay first, then hookline, each a fresh process: the "
        "level gets the relay's figures under `relay` and `cpu_vs_relay`, hookline's CPU "
        "per call-minute over the relay's (list an N again to repeat the pair)",
    )
    parser.add_argument(
        "--callers",
        choices=("lean", "sim"),
        default="lean",
        help="the simulated callers: bench/lean_caller.py (default; cheap enough for 150+ "
        "calls on one core) or the testkit's SimCall (trio-websocket), the same wire traffic",
    )
    parser.add_argument(
        "--think-s",
        type=float,
        default=0.0,
        help="before each turn the caller stays silent for a time drawn uniformly from "
        "[0, S] (seeded per call): calls that started together drift apart, as real "
        "callers do. Default 0: every call's turns fall in the same ~2 s window",
    )
    parser.add_argument(
        "--arrive-over-s",
        type=float,
        default=ARRIVE_OVER_S,
        help="the level's calls start evenly over this many seconds (default 2: an "
        "arrival burst; a real line's calls arrive over minutes). The JSON gives the "
        "overhead over every turn and over the turns while all N calls were up",
    )
    parser.add_argument(
        "--keep-core-awake",
        action="store_true",
        help="run a SCHED_IDLE busy loop on the server's core, so the core never idles: "
        "on this VM an idle vCPU halts and is slow to wake, which adds to every hop "
        "of a less busy server (docs/capacity.md)",
    )
    parser.add_argument(
        "--barge-in",
        action="store_true",
        help="interrupt each call's last turn ~0.3 s into the answer; a barge-in without "
        "a clear within 2 s is lost (and fails the level)",
    )
    parser.add_argument(
        "--profile-loadgen",
        action="store_true",
        help="with --profile: sample this process (the callers, and the fakes with "
        "--fakes-together) too, into DIR/loadgen-N.txt (py-spy then also runs on the load "
        "generator's core)",
    )
    parser.add_argument(
        "--fakes-together",
        action="store_true",
        help="run the provider fakes in this process's trio loop with the callers (as "
        "before 2026-12-01) instead of in a child process at a lower priority",
    )
    parser.add_argument("--serve-fakes", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fakes:
        trio.run(serve_fakes)
        sys.exit(0)
    FAKES_APART = not args.fakes_together
    PROFILE_LOADGEN = args.profile_loadgen
    CALLERS = args.callers
    SERVER = args.server
    BESIDE_RELAY = args.beside_relay
    if (SERVER == "relay" or BESIDE_RELAY) and (
        args.workers != 1 or args.count_steps or args.gc_log or args.stt_chunk_ms
    ):
        sys.exit("the relay is one plain process: no --workers, --count-steps, --gc-log "
                 "or --stt-chunk-ms with --server relay or --beside-relay")  # fmt: skip
    if BESIDE_RELAY and (SERVER == "relay" or args.profile is not None):
        sys.exit("--beside-relay runs hookline after the relay: no --server relay, no --profile")
    BARGE_IN = args.barge_in
    THINK_S = args.think_s
    ARRIVE_OVER_S = args.arrive_over_s
    KEEP_CORE_AWAKE = args.keep_core_awake
    WORKERS = args.workers
    PROFILE_S = args.profile_s
    COUNT_STEPS = args.count_steps
    GC_LOG = args.gc_log
    if args.stt_chunk_ms is not None:
        STT_SETTINGS = f"send_chunk_ms = {args.stt_chunk_ms}\n"
    if args.profile is not None:
        PROFILE_DIR = args.profile.resolve()
        PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    if len(os.sched_getaffinity(0)) < 2 or not {SERVER_CPU, LOADGEN_CPU} <= os.sched_getaffinity(0):
        sys.exit("bench_server needs CPUs 0 and 1 (server on one, callers and fakes on the other)")
    if WORKERS == 1:
        os.sched_setaffinity(0, {LOADGEN_CPU})  # before trio starts any thread
    trio.run(main, args.calls, args.turns)

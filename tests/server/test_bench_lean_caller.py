"""bench/lean_caller.py does what bench_server.py says its callers do: against a real
`hookline serve` (the real plugins, the loopback fakes), one lean call hears the
greeting, gets an answer after each tone, echoes every mark, has its barge-in answered
by a `clear`, and hangs up with `stop` (the server records `caller_hangup`). Its media
messages are byte for byte what the testkit's SimCall sends. No timed assertions."""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import duckdb
import httpx
import msgspec
import pytest
import trio
import trio.testing

from hookline.audio import tone_mulaw
from hookline_testkit.fake_openai import text
from hookline_testkit.twilio_sim import TwilioSimulator, _Media, _MediaBody

from .serving import free_port, serve_config, start_process, wait_ok

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from lean_caller import (
    _MARK,
    _MEDIA,
    CallOutcome,
    Ticker,
    _payloads,
    converse,
    lean_call,
    one_call,
)

ANSWER = "Sure, we can do that. What day works best for you?"


def test_media_message_is_what_the_simulator_sends() -> None:
    tone = tone_mulaw(0.05)  # 2.5 frames: the last is padded with silence
    payloads = _payloads(tone)
    assert len(payloads) == 3
    for i, payload in enumerate(payloads):
        frame = tone[i * 160 : (i + 1) * 160].ljust(160, b"\xff")
        chunk = i + 1
        sim = msgspec.json.encode(
            _Media(
                str(7 + i), "MZ1", _MediaBody("inbound", str(chunk), str((chunk - 1) * 20), frame)
            )
        )
        assert _MEDIA % (7 + i, b"MZ1", chunk, (chunk - 1) * 20, payload) == sim
    assert _MARK % (3, b"MZ1", b'"m-1"') == (
        b'{"event":"mark","sequenceNumber":"3","streamSid":"MZ1","mark":{"name":"m-1"}}'
    )


async def test_a_lean_call_against_hookline_serve(
    tmp_path,
    nursery,
    fake_stack,
    fake_deepgram_stt,
    fake_deepgram_tts,
    openai_fake,
    twilio_rest,
    twilio_auth_token,
):
    fake_deepgram_stt.fallback_text = "I need an oil change"
    fake_deepgram_tts.chars_per_second = 15.0  # an answer of ~3 s: long enough to interrupt
    openai_fake.responder = lambda _request: text(ANSWER)
    port = free_port()
    db = tmp_path / "calls.duckdb"
    config = serve_config(
        tmp_path, fake_stack, port, analytics=f'enabled = true\ndatabase = "{db}"'
    )
    stderr = tmp_path / "stderr.log"
    with stderr.open("wb") as err:
        proc = await start_process(
            nursery,
            [sys.executable, "-m", "hookline.cli", "serve", str(config)],
            env={**os.environ, **fake_stack.env()},
            stderr=err,
        )
        try:
            with trio.fail_after(90):
                await wait_ok(f"http://127.0.0.1:{port}/readyz")
                sim = TwilioSimulator(auth_token=twilio_auth_token, rest=twilio_rest, timeout=30)
                ticker = Ticker()
                async with trio.open_nursery() as ticking:
                    await ticking.start(ticker.run)
                    url = f"http://127.0.0.1:{port}/twilio/voice"
                    result = await one_call(
                        lambda: lean_call(sim, ticker, url),
                        turns=2,
                        tone=tone_mulaw(1.0),
                        timeout_s=60,
                        barge_in=True,
                    )
                    # The server hanging up through Twilio's REST API ends a lean call
                    # as Twilio would: the stream stops.
                    async with lean_call(sim, ticker, url) as ended:
                        await ended.wait_for_audio()
                        async with httpx.AsyncClient() as client:
                            answer = await client.post(
                                f"{twilio_rest.url}/2010-04-01/Accounts/{sim.account_sid}"
                                f"/Calls/{ended.call_sid}.json",
                                data={"Status": "completed"},
                                auth=(sim.account_sid, twilio_auth_token),
                            )
                        assert answer.status_code == 200, answer.text
                        await ended.closed.wait()
                    ticking.cancel_scope.cancel()
                proc.send_signal(signal.SIGTERM)
                await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
    log = stderr.read_text()
    assert result.outcome == "completed", (result, log[-3000:])
    assert result.greeting_ms is not None
    assert len(result.answer_ms) == 3  # two turns and the answer to the barge-in
    assert all(ms > 0 for ms in result.answer_ms)
    assert result.barge_ins == 1 and result.barge_ins_lost == 0 and result.clears >= 1
    assert result.marks_received > 0
    assert result.marks_echoed == result.marks_received and result.marks_lost == 0
    assert result.frames_sent > 100  # greeting, 3 s of tone, answers: 20 ms frames throughout
    assert fake_deepgram_stt.finals(), "the server's STT never heard the caller"
    assert proc.returncode == 0, log[-3000:]
    con = duckdb.connect(str(db), read_only=True)
    try:
        reasons = con.execute(
            "SELECT end_reason FROM calls WHERE provider_call_id = $1", [result.call_sid]
        ).fetchall()
    finally:
        con.close()
    assert reasons == [("caller_hangup",)]
    assert ended.ended_by_rest == "completed" and ended.stopped


class _InstantCall:
    """The caller-facing side of a call whose agent answers at once (converse's view)."""

    started_at = 0.0

    def __init__(self) -> None:
        self.clears: list[float] = []
        self.said: list[float] = []

    async def wait_for_audio(self, after: float | None = None) -> float:
        await trio.lowlevel.checkpoint()
        return trio.current_time()

    async def wait_until_quiet(self) -> None:
        await trio.lowlevel.checkpoint()

    async def say(self, tone: bytes) -> None:
        self.said.append(trio.current_time())


async def test_think_time_spreads_the_turns_of_calls_that_start_together(
    mock_clock: trio.testing.MockClock,
) -> None:
    # --think-s: before each turn a silence drawn from [0, S], seeded per call, so the
    # turns of calls that start at the same moment fall at different times.
    mock_clock.autojump_threshold = 0
    t0 = trio.current_time()
    calls = {seed: _InstantCall() for seed in (1, 2)}
    async with trio.open_nursery() as nursery:
        for seed, call in calls.items():
            think = partial(random.Random(seed).uniform, 0.0, 3.0)
            converse_ = partial(converse, turns=3, tone=b"", barge_in=False, think=think)
            nursery.start_soon(converse_, call, CallOutcome())
    for seed, call in calls.items():
        draw = partial(random.Random(seed).uniform, 0.0, 3.0)
        pauses = list(itertools.accumulate(draw() for _ in range(3)))
        assert [t - t0 for t in call.said] == pytest.approx(pauses)
    assert calls[1].said != pytest.approx(calls[2].said)


async def test_the_bench_serves_its_provider_fakes_from_a_child_below_the_callers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bench_server.py's default: the Deepgram and OpenAI fakes in a child process, a few
    nice steps below the callers (so the frame ticker is not held behind fake work). The
    child answers as the in-process fakes do and exits when the bench closes its stdin."""
    import bench_server

    monkeypatch.setattr(bench_server, "LOADGEN_CPU", min(os.sched_getaffinity(0)))
    async with bench_server.fakes_apart() as (stt, tts, llm, pid):
        assert pid != os.getpid()
        assert os.getpriority(os.PRIO_PROCESS, pid) == min(  # 19 is the lowest priority
            19, os.getpriority(os.PRIO_PROCESS, 0) + bench_server.FAKES_NICE
        )
        async with httpx.AsyncClient(timeout=10) as client:
            reply = await client.post(
                f"{llm.url}/chat/completions",
                headers={"authorization": f"Bearer {llm.api_key}"},
                json={
                    "model": "gpt-4o",
                    "stream": True,
                    "messages": [{"role": "user", "content": "hi"}],
                },
            )
        assert reply.status_code == 200
        chunks = [
            msgspec.json.decode(line[len("data: ") :])
            for line in reply.text.splitlines()
            if line.startswith("data: {")
        ]
        said = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert said == bench_server.ANSWER
        for url in (stt.url, tts.url):
            host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
            stream = await trio.open_tcp_stream(host, int(port))
            await stream.aclose()
    with pytest.raises(ProcessLookupError):  # the child has exited and been reaped
        os.kill(pid, 0)


def test_the_bench_wrapper_times_the_servers_collections(tmp_path: Path) -> None:
    """`--gc-log`: the server runs under bench_server.py's wrapper, which writes every
    garbage collection of the process when it exits; `gc_between` sums those in a window
    per generation."""
    import bench_server

    log = tmp_path / "gc.txt"
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-c", bench_server.SERVER_WRAPPER, "-", str(log), "--help"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert b"serve" in done.stdout  # the real CLI ran under it
    rows = [line.split() for line in log.read_text().splitlines()]
    assert rows, "importing the CLI allocates enough for at least one young collection"
    assert all(started <= float(t) <= time.time() and g in "012" for t, g, _ in rows)

    log.write_text("10.0 0 0.002\n11.0 0 0.004\n11.5 1 0.010\n30.0 2 0.100\n")
    assert bench_server.gc_between(log, 10.0, 20.0) == {
        "0": {"n": 2, "max_ms": 4.0, "mean_ms": 3.0, "ms_per_s": 0.6},
        "1": {"n": 1, "max_ms": 10.0, "mean_ms": 10.0, "ms_per_s": 1.0},
    }

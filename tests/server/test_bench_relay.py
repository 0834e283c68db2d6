"""bench/relay.py, the bare relay bench_server.py measures as hookline's floor
(`--server relay`), does the wire work it claims: against the same loopback fakes and a
lean caller, a call hears the greeting, gets an answer after each tone, has its barge-in
answered by a `clear` (and the TTS told to `Clear`), and every mark it was sent comes
back. A webhook without Twilio's signature is refused. No timed assertions."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import trio

from hookline.audio import tone_mulaw
from hookline_testkit.fake_openai import text
from hookline_testkit.twilio_sim import TwilioSimulator

from .serving import free_port, start_process, wait_ok

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from lean_caller import Ticker, lean_call, one_call

BENCH = Path(__file__).resolve().parents[2] / "bench"

ANSWER = "Sure, we can do that. What day works best for you?"


async def test_a_call_through_the_bare_relay(
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
    env = {
        **os.environ,
        **fake_stack.env(),
        "RELAY_STT_URL": fake_deepgram_stt.url,
        "RELAY_TTS_URL": fake_deepgram_tts.url,
        "RELAY_LLM_URL": openai_fake.url,
    }
    stderr = tmp_path / "stderr.log"
    with stderr.open("wb") as err:
        proc = await start_process(
            nursery,
            [sys.executable, str(BENCH / "relay.py"), "--port", str(port)],
            env=env,
            stderr=err,
        )
    try:
        with trio.fail_after(90):
            await wait_ok(f"http://127.0.0.1:{port}/readyz")
            sim = TwilioSimulator(auth_token=twilio_auth_token, rest=twilio_rest, timeout=30)
            url = f"http://127.0.0.1:{port}/twilio/voice"
            unsigned = await sim.post_webhook(url, sign=False)
            ticker = Ticker()
            async with trio.open_nursery() as ticking:
                await ticking.start(ticker.run)
                result = await one_call(
                    lambda: lean_call(sim, ticker, url),
                    turns=2,
                    tone=tone_mulaw(1.0),
                    timeout_s=60,
                    barge_in=True,
                )
                ticking.cancel_scope.cancel()
    finally:
        proc.terminate()  # as bench_server stops it
        with trio.move_on_after(10):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
    log = stderr.read_text()
    assert proc.returncode == 0, log[-3000:]  # SIGTERM is its normal end, not a failure
    assert unsigned.status_code == 403 and unsigned.stream is None
    assert result.outcome == "completed", (result, log[-3000:])
    assert result.greeting_ms is not None
    assert len(result.answer_ms) == 3  # two turns and the answer to the barge-in
    assert result.barge_ins == 1 and result.barge_ins_lost == 0 and result.clears >= 1
    assert result.marks_received > 0
    assert result.marks_echoed == result.marks_received and result.marks_lost == 0
    assert fake_deepgram_stt.finals(), "the relay's STT never heard the caller"
    speaks = [c for c in fake_deepgram_tts.connections if c.flushes]
    assert any(ANSWER.split(". ")[0] in flush for c in speaks for flush in c.flushes)
    assert any(c.clears for c in fake_deepgram_tts.connections), "no Clear reached the TTS"

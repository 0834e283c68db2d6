"""Issue 14 #5: two `hookline serve` processes on one PostgreSQL database, two callers
booking the same slot at the same moment through the real Twilio, Deepgram and OpenAI
plugins (against the loopback fakes): exactly one wins, the other is told that another
caller just booked it.

"The same moment" is made certain, not hoped for: the test itself holds the database's
appointments lock (the advisory lock every booking takes before it checks the bay) until
both processes are waiting on it, so both have already read the bay as free; then it
lets go and the database decides."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import sys
from functools import partial
from pathlib import Path

import msgspec
import psycopg
import pytest
import trio

from hookline.audio import tone_mulaw
from hookline_testkit.fake_openai import Received, Reply, call, text, tool_calls
from hookline_testkit.stack import FakeStack
from hookline_testkit.twilio_sim import TwilioSimulator

from .serving import free_port, serve_config, start_process, wait_ok

LOCK = "calendar_google.appointments"  # hookline_calendar_google.local_store's lock name
CALLERS = ("+13125550101", "+13125550102")
RACED = "another caller just booked it"
DAY = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).date()
START = f"{DAY.isoformat()}T10:00"

WEEK = ", ".join(f'{d} = "08:00-18:00"' for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun"))
SHOP = f"""
[tools.calendar_google]
backend = "local"
timezone = "UTC"
bays = 1
min_lead_minutes = 60
max_days_ahead = 30
services = {{ "oil change" = 30 }}
hours = {{ {WEEK} }}

[storage]
backend = "postgresql"

[policy]
tool_timeout_s = 90
"""


def _tool_result(req: Received) -> str | None:
    assert req.chat is not None
    last = req.chat.messages[-1]
    return last.content if last.role == "tool" and isinstance(last.content, str) else None


def _brain(req: Received) -> Reply:
    """Book the slot when the caller speaks; say the tool's answer when it comes back."""
    result = _tool_result(req)
    if result is None:
        args = {"service": "oil change", "start": START, "customer_name": "Pat Lee",
                "vehicle": "2018 Honda Civic"}  # fmt: skip
        return tool_calls(call("book_appointment", msgspec.json.encode(args).decode()))
    if RACED in result:
        return text("Sorry, that time is already taken; another caller just booked it.")
    return text("You're booked for an oil change." if '"booked":true' in result else "Hmm.")


@pytest.fixture
def stack(fake_stack: FakeStack, fake_deepgram_stt, openai_fake) -> FakeStack:
    fake_deepgram_stt.fallback_text = "I'd like an oil change at ten"
    openai_fake.responder = _brain
    return fake_stack


def _config(folder: Path, stack: FakeStack, port: int) -> Path:
    folder.mkdir()
    config = serve_config(folder, stack, port, drain_timeout_s=5.0, extra=SHOP)
    # The calendar's tools, beside the stack's providers.
    llm = 'llm = "openai"\n'
    config.write_text(config.read_text().replace(llm, llm + 'tools = ["calendar_google"]\n', 1))
    return config


def _sql(url: str, sql: str, *params: object) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as con:
        return con.execute(sql, params).fetchall()


async def test_two_processes_book_one_slot_exactly_one_wins(
    tmp_path: Path, nursery, stack: FakeStack, openai_fake, fake_deepgram_tts, postgres_url: str
) -> None:
    ports = [free_port(), free_port()]
    env = {**os.environ, **stack.env(), "HOOKLINE_DATABASE_URL": postgres_url}
    logs = [tmp_path / f"server{i}.log" for i in (0, 1)]
    procs = []
    holder = await trio.to_thread.run_sync(partial(psycopg.connect, postgres_url, autocommit=True))
    try:
        for i, port in enumerate(ports):
            config = _config(tmp_path / f"server{i}", stack, port)
            with logs[i].open("wb") as err:
                procs.append(
                    await start_process(
                        nursery,
                        [sys.executable, "-m", "hookline.cli", "serve", str(config)],
                        env=env,
                        stderr=err,
                    )
                )
        with trio.fail_after(120):
            for port in ports:
                await wait_ok(f"http://127.0.0.1:{port}/readyz", timeout_s=90)
            # Every booking now waits for the test to let go of the appointments lock.
            await trio.to_thread.run_sync(
                holder.execute, "SELECT pg_advisory_lock(hashtext(%s))", [LOCK]
            )
            answered = trio.Event()
            sim = TwilioSimulator(auth_token=stack.auth_token)

            async def caller(port: int, number: str) -> None:
                url = f"http://127.0.0.1:{port}/twilio/voice"
                async with sim.call(url, from_number=number) as phone:
                    await phone.wait_for_audio()  # the greeting
                    await phone.wait_until_quiet()
                    await phone.say(tone_mulaw(0.6))
                    await answered.wait()
                    await phone.wait_until_quiet()

            async def release_when_both_wait() -> None:
                waiting = (
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                )
                # Polled: the waiters are in other processes, pg_locks is what shows them.
                while (await trio.to_thread.run_sync(_sql, postgres_url, waiting))[0][0] < 2:  # noqa: ASYNC110
                    await trio.sleep(0.05)
                await trio.to_thread.run_sync(
                    holder.execute, "SELECT pg_advisory_unlock(hashtext(%s))", [LOCK]
                )
                while sum(_tool_result(r) is not None for r in openai_fake.chats) < 2:  # noqa: ASYNC110
                    await trio.sleep(0.05)  # the fake is polled: it has no event per request
                answered.set()

            async with trio.open_nursery() as calls:
                calls.start_soon(release_when_both_wait)
                for port, number in zip(ports, CALLERS, strict=True):
                    calls.start_soon(caller, port, number)
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                await proc.wait()
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
        holder.close()
    log = "\n".join(p.read_text() for p in logs)
    assert [p.returncode for p in procs] == [0, 0], log[-3000:]
    assert "Traceback" not in log, log[-3000:]

    results = [r for req in openai_fake.chats if (r := _tool_result(req)) is not None]
    assert len(results) == 2, results
    assert sum('"booked":true' in r for r in results) == 1, results
    assert sum(RACED in r for r in results) == 1, results
    # The loser heard it (the model said so and the TTS spoke it).
    assert sum(RACED in t for t in fake_deepgram_tts.flushed_texts) == 1, (
        fake_deepgram_tts.flushed_texts
    )
    rows = _sql(
        postgres_url,
        "SELECT phone, start_at FROM appointments WHERE status <> 'cancelled'",
    )
    assert len(rows) == 1 and rows[0][0] in CALLERS, rows
    assert rows[0][1] == dt.datetime.fromisoformat(START).replace(tzinfo=dt.UTC)
    assert len(re.findall(r"hookline\.server stopped$", log, re.M)) == 2, log[-3000:]


async def test_a_duckdb_calendar_takes_one_process_a_second_worker_is_refused(
    tmp_path: Path, nursery, stack: FakeStack
) -> None:
    """The embedded default holds its file in the one serving process; a second worker
    stops the server at start-up with one line that names the PostgreSQL option."""
    config = _config(tmp_path / "shop", stack, free_port())
    config.write_text(config.read_text().replace('backend = "postgresql"', 'backend = "duckdb"'))
    stderr = tmp_path / "stderr.log"
    with stderr.open("wb") as err:
        proc = await start_process(
            nursery,
            [sys.executable, "-m", "hookline.cli", "serve", str(config), "--workers", "2"],
            env={**os.environ, **stack.env()},
            stderr=err,
        )
        with trio.fail_after(90):
            await proc.wait()
    log = stderr.read_text()
    assert proc.returncode == 1, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    last = log.strip().splitlines()[-1]
    assert re.fullmatch(r"hookline: worker \d could not start: .*open in another process.*", last)
    assert '[storage] backend = "postgresql"' in last, last

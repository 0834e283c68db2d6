"""`hookline serve --workers N`: worker processes on one port under one supervisor.

Each test runs the real command as a subprocess with every service faked on loopback.
Webhook and stream are two connections, so with two workers a call's stream often
lands on the other worker than its webhook: the self-verifying stream token is what
lets every call through."""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import duckdb
import httpx
import pytest
import trio

from hookline.dashboard.auth import hash_password
from hookline_testkit.dial import dial, summarize
from hookline_testkit.fake_openai import text
from hookline_testkit.stack import FakeStack

from .serving import free_port, serve_config, start_process, wait_ok


@pytest.fixture
def stack(fake_stack, fake_deepgram_stt, openai_fake):
    fake_deepgram_stt.fallback_text = "I need an oil change"
    openai_fake.script(*[text("Sure, we can do that.")] * 20)
    return fake_stack


def _config(tmp_path: Path, stack: FakeStack, port: int) -> Path:
    database = tmp_path / "calls.duckdb"
    return serve_config(
        tmp_path, stack, port, drain_timeout_s=5.0, analytics=f'database = "{database}"'
    )


async def _serve(nursery, config: Path, env: dict[str, str], err, *extra: str):
    return await start_process(
        nursery,
        [sys.executable, "-m", "hookline.cli", "serve", str(config), *extra],
        env=env,
        stderr=err,
    )


async def _wait_for_line(path: Path, pattern: str) -> None:
    # Polling: the server is another process, its log file is all there is to watch.
    while not _log_has(path, pattern):  # noqa: ASYNC110
        await trio.sleep(0.05)


def _log_has(path: Path, pattern: str) -> bool:
    return re.search(pattern, path.read_text()) is not None


def _worker_pids(log: str) -> dict[int, int]:
    return {int(i): int(pid) for i, pid in re.findall(r"worker (\d+) started \(pid (\d+)\)", log)}


async def _dashboard_today(base: str, password: str, looks: int) -> list[int]:
    """Sign in to /admin once, then read Today's call count `looks` times, each on a new
    connection (so on whichever worker accepts it): the counts, or -1 for a page that
    did not take the sign-in."""
    async with httpx.AsyncClient(
        base_url=base, limits=httpx.Limits(max_keepalive_connections=0)
    ) as client:
        login = await client.get("/admin/login")
        csrf = login.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        signed = await client.post("/admin/login", data={"csrf": csrf, "password": password})
        assert signed.status_code == 303, signed.text[:300]
        counts = []
        for _ in range(looks):
            r = await client.get("/admin/api/today")
            counts.append(r.json()["calls"] if r.status_code == 200 else -1)
        return counts


async def test_two_workers_share_the_port_and_drain_together(tmp_path, nursery, stack):
    port = free_port()
    config = _config(tmp_path, stack, port)
    stderr = tmp_path / "stderr.log"
    password = "the shop's password 123"
    # No [dashboard] session key in the environment: the supervisor gives the workers one.
    env = {**os.environ, **stack.env(), "HOOKLINE_DASHBOARD_PASSWORD_HASH": hash_password(password)}
    env.pop("HOOKLINE_DASHBOARD_SECRET", None)
    with stderr.open("wb") as err:
        proc = await _serve(nursery, config, env, err, "--workers", "2")
        try:
            with trio.fail_after(90):
                await _wait_for_line(stderr, r"worker 1 \(pid \d+\) serving")
                await _wait_for_line(stderr, r"worker 0 \(pid \d+\) serving")
                await wait_ok(f"http://127.0.0.1:{port}/healthz")
                results = await dial(
                    f"http://127.0.0.1:{port}/twilio/voice",
                    calls=6,
                    auth_token=stack.auth_token,
                    say_s=0.6,
                    call_timeout_s=40,
                )
                # Whichever worker answers, /admin shows every worker's calls once their
                # segments land (at most every 5 s per worker) and keeps the sign-in.
                while (
                    counts := await _dashboard_today(f"http://127.0.0.1:{port}", password, 8)
                ) != [6] * 8:
                    assert -1 not in counts, counts
                    await trio.sleep(0.5)
                proc.send_signal(signal.SIGTERM)
                await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
    log = stderr.read_text()
    assert summarize(results)["completed"] == 6, (results, log[-3000:])
    assert proc.returncode == 0, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert "passing it to 2 worker(s)" in log and "every worker stopped" in log
    assert len(re.findall(r"hookline\.server stopped$", log, re.M)) == 2, log[-3000:]
    # One analytics file per worker (one DuckDB file takes one process); together they
    # hold every call, each once.
    rows = []
    for index in (0, 1):
        db = tmp_path / f"calls.worker{index}.duckdb"
        assert db.exists(), log[-3000:]
        with duckdb.connect(str(db), read_only=True) as con:
            rows += con.execute("SELECT provider_call_id, end_reason FROM calls").fetchall()
    assert sorted(reason for _, reason in rows) == ["caller_hangup"] * 6, rows
    assert len({sid for sid, _ in rows}) == 6
    assert not (tmp_path / "calls.duckdb").exists()


async def test_a_worker_that_cannot_start_stops_the_server_with_one_line(tmp_path, nursery, stack):
    config = _config(tmp_path, stack, free_port())
    env = {k: v for k, v in {**os.environ, **stack.env()}.items() if k != "TWILIO_AUTH_TOKEN"}
    stderr = tmp_path / "stderr.log"
    with stderr.open("wb") as err:
        proc = await _serve(nursery, config, env, err, "--workers", "2")
        with trio.fail_after(90):
            await proc.wait()
    log = stderr.read_text()
    assert proc.returncode == 1, log
    assert "Traceback" not in log, log
    last = log.strip().splitlines()[-1]
    # The worker's own reason, said once by the supervisor (not once per worker).
    assert re.fullmatch(
        r"hookline: worker \d could not start: .*TWILIO_AUTH_TOKEN is not set.*", last
    )
    # That line and the supervisor's error log line before it; the workers say nothing.
    assert sum("TWILIO_AUTH_TOKEN" in line for line in log.splitlines()) == 2, log


async def test_a_crashed_worker_is_restarted_and_a_lost_supervisor_drains_the_workers(
    tmp_path, nursery, stack
):
    port = free_port()
    config = _config(tmp_path, stack, port)
    stderr = tmp_path / "stderr.log"
    with stderr.open("wb") as err:
        proc = await _serve(nursery, config, {**os.environ, **stack.env()}, err, "--workers", "2")
        try:
            with trio.fail_after(120):
                await _wait_for_line(stderr, r"worker 1 \(pid \d+\) serving")
                await _wait_for_line(stderr, r"worker 0 \(pid \d+\) serving")
                first = _worker_pids(stderr.read_text())
                os.kill(first[1], signal.SIGKILL)
                await _wait_for_line(stderr, r"worker 1 .*killed by SIGKILL.*restarting it in 1 s")
                while _worker_pids(stderr.read_text())[1] == first[1]:  # noqa: ASYNC110
                    await trio.sleep(0.05)
                while len(re.findall(r"worker 1 \(pid \d+\) serving", stderr.read_text())) < 2:  # noqa: ASYNC110
                    await trio.sleep(0.05)
                results = await dial(
                    f"http://127.0.0.1:{port}/twilio/voice",
                    calls=3,
                    auth_token=stack.auth_token,
                    say_s=0.4,
                    call_timeout_s=40,
                )
                assert summarize(results)["completed"] == 3, results
                # The supervisor killed outright: its workers notice and drain on their own.
                live = _worker_pids(stderr.read_text())
                proc.kill()
                await proc.wait()
                for pid in live.values():
                    while _state(pid) not in ("Z", "gone"):  # noqa: ASYNC110
                        await trio.sleep(0.05)
        finally:
            if proc.returncode is None:
                proc.kill()
    log = stderr.read_text()
    assert "the supervisor is gone: draining" in log, log[-3000:]


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_workers_default_to_one_process_and_auto_is_one_per_core() -> None:
    # One process unless asked (hookline.workers.DEFAULT_WORKERS says why); "auto" is
    # the cores this process may run on.
    from hookline.cli import build_parser
    from hookline.workers import cores

    parser = build_parser()
    assert parser.parse_args(["serve", "agent.toml"]).workers is None
    assert parser.parse_args(["serve", "agent.toml", "--workers", "auto"]).workers == cores()
    assert cores() == len(os.sched_getaffinity(0))
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "agent.toml", "--workers", "many"])


async def test_serve_without_workers_is_this_process_alone(tmp_path, nursery, stack):
    port = free_port()
    config = _config(tmp_path, stack, port)
    stderr = tmp_path / "stderr.log"
    with stderr.open("wb") as err:
        proc = await _serve(nursery, config, {**os.environ, **stack.env()}, err)
        try:
            with trio.fail_after(90):
                await wait_ok(f"http://127.0.0.1:{port}/readyz")
                proc.send_signal(signal.SIGTERM)
                await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
    log = stderr.read_text()
    assert proc.returncode == 0, log[-3000:]
    assert not re.search(r"worker\(s\)|worker \d", log), log[-3000:]  # no supervisor
    assert len(re.findall(r"hookline\.server stopped$", log, re.M)) == 1, log[-3000:]
    # Its analytics file is the configured one, not calls.worker0.duckdb.
    assert (tmp_path / "calls.duckdb").exists() and not list(tmp_path.glob("calls.worker*"))

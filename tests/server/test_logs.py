"""The log as an operator reads it: one call id per line, JSON lines a shipper can parse,
levels from the config or the command line, third-party request lines quiet, and no
caller number in clear when analytics hashes them."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
from functools import partial

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from hookline import logs
from hookline.config import LoggingConfig
from hookline_testkit.dial import dial, summarize
from hookline_testkit.fake_openai import text

from .serving import free_port, serve_config, wait_ok

CALLER = "+15550100"  # what the dialer sends as From


async def test_json_logs_of_a_served_call(
    tmp_path, nursery, fake_stack, fake_deepgram_stt, openai_fake, twilio_auth_token
):
    fake_deepgram_stt.fallback_text = "I need an oil change"
    openai_fake.script(text("Sure, we can do that."))
    port, metrics_port = free_port(), free_port()
    stack = fake_stack
    analytics = f'database = "{tmp_path / "calls.duckdb"}"\ncaller_numbers = "hashed"'
    extra = f'\n[logging]\nformat = "json"\n\n[metrics]\nenabled = true\nport = {metrics_port}\n'
    config = serve_config(tmp_path, stack, port, analytics=analytics, extra=extra)
    env = {**os.environ, **stack.env(), "HOOKLINE_HASH_SALT": "pepper"}
    stderr = tmp_path / "stderr.log"
    with stderr.open("wb") as err:
        run = partial(
            trio.run_process,
            [sys.executable, "-m", "hookline.cli", "serve", str(config), "--workers", "1"],
            env=env,
            stderr=err,
            stdout=subprocess.DEVNULL,
            check=False,
        )
        proc = await nursery.start(run)
        try:
            with trio.fail_after(60):
                await wait_ok(f"http://127.0.0.1:{port}/readyz")
                results = await dial(
                    f"http://127.0.0.1:{port}/twilio/voice",
                    auth_token=twilio_auth_token,
                    say_s=0.6,
                    call_timeout_s=30,
                )
                # The same process serves its metrics on their own port (the entry point
                # plugin, found as a deployment finds it).
                async with httpx.AsyncClient() as client:
                    while True:
                        scraped = (
                            await client.get(f"http://127.0.0.1:{metrics_port}/metrics")
                        ).text
                        if "hookline_calls_total{" in scraped:
                            break
                        await trio.sleep(0.05)
                proc.send_signal(signal.SIGTERM)
                await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
    log = stderr.read_text()
    assert summarize(results)["completed"] == 1, (results, log[-3000:])
    assert proc.returncode == 0, log[-3000:]
    lines = [json.loads(line) for line in log.splitlines()]  # every line is one object
    assert lines
    for line in lines:
        assert set(line) >= {"ts", "level", "logger", "call_id", "message"}, line
        assert line["ts"].endswith("+00:00")
    call_ids = {line["call_id"] for line in lines if line["call_id"]}
    assert len(call_ids) == 1, call_ids  # the one call placed
    [call_id] = call_ids
    assert not any(f"call {call_id}" in line["message"] for line in lines)  # said once
    started = [line for line in lines if line["message"].startswith("call started from")]
    assert len(started) == 1 and started[0]["call_id"] == call_id
    assert "from #" in started[0]["message"]  # the analytics hash, not the number
    assert CALLER not in log and CALLER[2:] not in log
    libraries = tuple(logs.LIBRARY_LOGGERS)
    quiet = [
        line
        for line in lines
        if line["logger"].split(".")[0] in libraries and line["level"] in ("DEBUG", "INFO")
    ]
    assert not quiet, quiet
    assert any(line["message"] == "stopped" for line in lines)
    calls = {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if sample.name == "hookline_calls_total"
    }
    assert calls == {"caller_hangup": 1.0}


@pytest.fixture(autouse=True)
def _root_logger_restored():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_text_lines_name_the_call_once():
    stream = io.StringIO()
    logs.configure("INFO", "text", stream=stream)
    try:
        logs.call_log("hookline.test", "c0ffee").info("hello %s", "there")
        logging.getLogger("hookline.test").info("no call here")
    finally:
        logs.configure(None, None)
    first, second = stream.getvalue().splitlines()
    assert first.endswith("INFO hookline.test [call c0ffee] hello there")
    assert first.count("c0ffee") == 1
    assert second.endswith("INFO hookline.test no call here")


def test_command_line_wins_over_the_config():
    stream = io.StringIO()
    logs.configure("WARNING", None, stream=stream)  # --log-level WARNING
    try:
        logs.configure_from_config(LoggingConfig(level="DEBUG", format="json"))
        root = logging.getLogger()
        assert root.level == logging.WARNING  # the command line's
        handler = next(h for h in root.handlers if isinstance(h, logs._HooklineHandler))
        assert isinstance(handler.formatter, logs.JsonFormatter)  # the config's
        assert logging.getLogger("httpx").level == logging.WARNING
        assert logging.getLogger("openai").level == logging.WARNING
    finally:
        logs.configure(None, None)


def test_exceptions_stay_inside_one_json_line():
    stream = io.StringIO()
    logs.configure("INFO", "json", stream=stream)
    try:
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            logging.getLogger("hookline.test").exception("it broke")
    finally:
        logs.configure(None, None)
    [line] = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["message"] == "it broke" and "ValueError: boom" in record["exc"]
    assert record["call_id"] is None

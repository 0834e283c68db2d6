"""The log as an operator reads it: one call id per line, JSON lines a shipper can parse,
levels from the config or the command line, third-party request lines quiet, and no
caller number in clear when analytics hashes them."""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from hookline import logs
from hookline.config import LoggingConfig
from hookline_testkit.dial import dial, summarize
from hookline_testkit.fake_openai import text

from .serving import free_port, serve_config, start_process, wait_ok

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
        proc = await start_process(
            nursery,
            [sys.executable, "-m", "hookline.cli", "serve", str(config), "--workers", "1"],
            env=env,
            stderr=err,
        )
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
    # At INFO the log is hookline's own: no library's per-request lines (whichever HTTP
    # stack the SDKs bring: the OpenAI SDK's is httpx2).
    quiet = [
        line
        for line in lines
        if line["logger"].split(".")[0] != "hookline" and line["level"] in ("DEBUG", "INFO")
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


def test_another_handler_still_gets_the_record_whole():
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    stream = io.StringIO()
    logs.configure("INFO", "text", stream=stream)
    keep = Keep()
    logging.getLogger().addHandler(keep)
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("hookline.test").exception("it broke for %s", "c0ffee")
    finally:
        logging.getLogger().removeHandler(keep)
        logs.configure(None, None)
    [record] = seen
    assert record.args == ("c0ffee",) and record.exc_info is not None
    assert "it broke for c0ffee" in stream.getvalue() and "ValueError: boom" in stream.getvalue()


# A child that logs `lines` lines through `hookline.logs` to its stderr, then says "done"
# on stdout. Its stderr is a pipe the test does not read until then: a log shipper that
# stopped taking lines (Docker's default log mode blocks the writer when its driver falls
# behind; a full pipe to journald or `| tee` does the same).
_LOGGING_CHILD = """
import logging, sys
from hookline import logs
logs.configure("INFO", "text")
log = logging.getLogger("hookline.test")
for i in range(int(sys.argv[1])):
    log.info("line %d %s", i, "x" * 100)
print("done", flush=True)
"""


def _run_with_stderr_unread(lines: int) -> tuple[str, list[str]]:
    """What the child says on stdout while nobody reads its stderr (within 60 s), then
    every line of its stderr once it is read."""
    child = subprocess.Popen(
        [sys.executable, "-c", _LOGGING_CHILD, str(lines)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    said: list[str] = []
    reader = threading.Thread(target=lambda: said.append(child.stdout.readline()), daemon=True)
    reader.start()
    reader.join(60)
    try:
        err = child.stderr.read() if said else ""
    finally:
        child.kill()
        child.wait()
    return (said[0].strip() if said else ""), err.splitlines()


def test_a_log_output_that_takes_no_lines_does_not_stop_the_process():
    # 2,000 lines of ~150 bytes: several times what a pipe holds (64 KB). The thread
    # that logs them is the one that carries every call's audio in `hookline serve`.
    said, err = _run_with_stderr_unread(2000)
    assert said == "done"
    # Nothing lost: once the output takes lines again, every line is written, in order.
    numbers = [int(line.split("line ")[1].split()[0]) for line in err if " line " in line]
    assert numbers == list(range(2000))


def test_lines_the_queue_cannot_hold_are_counted_and_said():
    said, err = _run_with_stderr_unread(logs.QUEUED_LINES + 3000)
    assert said == "done"
    written = [line for line in err if " line " in line]
    # Said as soon as the output takes lines again (more than once while the drops go
    # on): every line is either written or counted.
    notices = [line for line in err if "log lines dropped" in line]
    dropped = sum(int(n.split("WARNING hookline.logs ")[1].split()[0]) for n in notices)
    assert dropped > 0 and len(written) + dropped == logs.QUEUED_LINES + 3000


async def test_calls_go_on_while_the_servers_stderr_takes_no_lines(
    tmp_path, nursery, fake_stack, fake_deepgram_stt, openai_fake, twilio_auth_token
):
    fake_deepgram_stt.fallback_text = "I need an oil change"
    openai_fake.script(text("Sure, we can do that."), text("Anything else?"))
    port = free_port()
    config = serve_config(tmp_path, fake_stack, port)
    env = {**os.environ, **fake_stack.env()}
    read_end, write_end = os.pipe()
    # The smallest pipe the kernel allows (one page): start-up's own lines fill it.
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    proc = await start_process(
        nursery,
        [sys.executable, "-m", "hookline.cli", "--log-level", "DEBUG", "serve", str(config)],
        env=env,
        stderr=write_end,
    )
    os.close(write_end)
    drained: list[bytes] = []
    try:
        with trio.fail_after(60):
            await wait_ok(f"http://127.0.0.1:{port}/readyz")
            results = await dial(
                f"http://127.0.0.1:{port}/twilio/voice",
                auth_token=twilio_auth_token,
                calls=2,
                say_s=0.6,
                call_timeout_s=30,
            )
            # Now the output takes lines again: what was queued is written.
            reader = threading.Thread(target=_drain, args=(read_end, drained), daemon=True)
            reader.start()
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
            await trio.to_thread.run_sync(reader.join, 10)
    finally:
        if proc.returncode is None:
            proc.kill()
    log = b"".join(drained).decode()
    assert summarize(results)["completed"] == 2, (results, log[-3000:])
    assert proc.returncode == 0, log[-3000:]
    assert log.count("call started from") == 2
    # The lines queued while nothing was read, and those of the drain, were written.
    assert any(line.endswith(" stopped") for line in log.splitlines()), log[-3000:]


def _drain(fd: int, into: list[bytes]) -> None:
    with os.fdopen(fd, "rb") as pipe:
        while chunk := pipe.read1(65536):
            into.append(chunk)


def test_the_process_exits_when_its_stderr_never_takes_the_queued_lines():
    read_end, write_end = os.pipe()
    child = subprocess.Popen(
        [sys.executable, "-c", _LOGGING_CHILD, "5000"],
        stdout=subprocess.DEVNULL,
        stderr=write_end,
    )
    os.close(write_end)
    try:
        # Exit waits for the queued lines a bounded time (logs.EXIT_WAIT_S), then goes.
        assert child.wait(timeout=60) == 0
    finally:
        child.kill()
        os.close(read_end)

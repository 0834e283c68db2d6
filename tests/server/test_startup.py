"""`hookline serve` starting as a deployer meets it: every start-up failure is one line on
stderr naming the provider or the file and the fix, with its documented exit status
(hookline/cli.py), never a traceback; an unreachable provider is retried first; the
server listens during the boot and is ready only once the phrases are cached."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path

import httpx
import trio

import hookline_telephony_twilio
from hookline.config import Secrets
from hookline.runtime import Runtime
from hookline.server import serve_runtime
from hookline.testing.harness import make_config, scripted_plugins
from hookline.testing.scripted import ScriptedLLM, ScriptedSTT, ScriptedTTS

from .serving import free_port

SERVE_TIMEOUT_S = 60


def _config(tmp_path: Path, providers: str, extra: str = "", port: int | None = None) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""
[agent]
name = "Riverside Auto Service"
{providers}
[server]
host = "127.0.0.1"
port = {port or free_port()}
startup_timeout_s = 15.0  # generous: a loaded machine is slow
drain_timeout_s = 0.5

[analytics]
enabled = false
{extra}
"""
    )
    return path


async def _serve(config: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run `hookline [args] serve CONFIG` to its exit; (status, stderr)."""
    with trio.fail_after(SERVE_TIMEOUT_S):
        done = await trio.run_process(
            [sys.executable, "-m", "hookline.cli", *args, "serve", str(config), "--workers", "1"],
            env={**os.environ, **env},
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return done.returncode, done.stderr.decode()


def _the_line(stderr: str) -> str:
    assert "Traceback" not in stderr and "ExceptionGroup" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr  # --log-level CRITICAL: only the failure itself
    assert lines[0].startswith("hookline: "), stderr
    return lines[0]


async def test_unreachable_tts_is_retried_then_one_line_exit_4(tmp_path, fake_stack):
    closed = f"http://127.0.0.1:{free_port()}"
    providers = fake_stack.providers_toml().replace(fake_stack.tts.base_url, closed)
    providers = providers.replace(
        'api_key_env = "DEEPGRAM_TTS_KEY"', 'api_key_env = "DEEPGRAM_TTS_KEY"\nmax_retries = 0'
    )
    config = _config(tmp_path, providers)
    config.write_text(
        config.read_text().replace("startup_timeout_s = 15.0", "startup_timeout_s = 3.0")
    )
    status, stderr = await _serve(config, fake_stack.env(), "--log-level", "CRITICAL")
    line = _the_line(stderr)
    assert status == 4, stderr
    assert "tts/deepgram" in line and closed in line and "[tts.deepgram]" in line
    assert "reachable" in line
    # With the default log level the retries are visible, each in one line.
    status, stderr = await _serve(config, fake_stack.env())
    assert status == 4 and "Traceback" not in stderr
    assert "start-up failed (" in stderr and "retry 1" in stderr  # retried, then gave up


async def test_refused_tts_key_is_one_line_exit_3(tmp_path, fake_stack):
    fake_stack.tts.reject_auth = True
    config = _config(tmp_path, fake_stack.providers_toml())
    status, stderr = await _serve(config, fake_stack.env(), "--log-level", "CRITICAL")
    line = _the_line(stderr)
    assert status == 3, stderr
    assert "tts/deepgram" in line and "DEEPGRAM_TTS_KEY" in line and "fix the key" in line


async def test_transient_tts_errors_at_boot_are_retried(tmp_path, fake_stack, nursery):
    fake_stack.tts.rest_errors = [503] * 3  # the plugin does not retry: the boot does
    providers = fake_stack.providers_toml().replace(
        'api_key_env = "DEEPGRAM_TTS_KEY"', 'api_key_env = "DEEPGRAM_TTS_KEY"\nmax_retries = 0'
    )
    port = free_port()
    config = _config(tmp_path, providers, port=port).read_text()
    config = config.replace("startup_timeout_s = 15.0", "startup_timeout_s = 30.0")
    (tmp_path / "agent.toml").write_text(config)
    env = {**os.environ, **fake_stack.env()}
    cmd = [
        sys.executable,
        "-m",
        "hookline.cli",
        "serve",
        str(tmp_path / "agent.toml"),
        "--workers",
        "1",
    ]
    run = partial(trio.run_process, cmd, env=env, stderr=subprocess.PIPE, check=False)
    proc = await nursery.start(run)
    try:
        with trio.fail_after(SERVE_TIMEOUT_S):
            async with httpx.AsyncClient() as client:
                while True:
                    try:
                        if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert proc.returncode is None, "serve exited instead of retrying"
                    await trio.sleep(0.1)
        assert fake_stack.tts.rest_errors == []  # all three were met and retried past
    finally:
        proc.terminate()
        with trio.fail_after(SERVE_TIMEOUT_S):
            await proc.wait()
    assert proc.returncode == 0


async def test_taken_port_is_one_line_exit_5(tmp_path, fake_stack):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = _config(tmp_path, fake_stack.providers_toml(), port=port)
        status, stderr = await _serve(config, fake_stack.env(), "--log-level", "CRITICAL")
    line = _the_line(stderr)
    assert status == 5, stderr
    assert f"cannot listen on 127.0.0.1:{port}" in line and "--port" in line


async def test_taken_metrics_port_is_one_line_exit_5(tmp_path, fake_stack):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        extra = f"[metrics]\nenabled = true\nport = {port}\n"
        config = _config(tmp_path, fake_stack.providers_toml(), extra)
        status, stderr = await _serve(config, fake_stack.env(), "--log-level", "CRITICAL")
    line = _the_line(stderr)
    assert status == 5, stderr
    assert "metrics" in line and "[metrics] port" in line


async def test_unreadable_instructions_file_is_one_line_exit_1(tmp_path, fake_stack):
    config = _config(tmp_path, fake_stack.providers_toml())
    text = config.read_text().replace(
        'name = "Riverside Auto Service"',
        'name = "Riverside Auto Service"\ninstructions_file = "missing.md.j2"',
    )
    config.write_text(text)
    status, stderr = await _serve(config, fake_stack.env(), "--log-level", "CRITICAL")
    line = _the_line(stderr)
    assert status == 1, stderr
    assert "agent.toml" in line and "missing.md.j2" in line and "no such file" in line


async def test_plugin_import_error_is_one_line_exit_6(tmp_path, fake_stack):
    # A distribution whose `hookline` entry point cannot be imported.
    site = tmp_path / "site"
    dist = site / "hookline_tts_broken-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: hookline-tts-broken\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text("[hookline]\nbroken = hookline_tts_broken\n")
    (site / "hookline_tts_broken.py").write_text("import deepgram_sdk_v99  # not installed\n")
    providers = fake_stack.providers_toml().replace('tts = "deepgram"', 'tts = "broken"', 1)
    config = _config(tmp_path, providers)
    env = {**fake_stack.env(), "PYTHONPATH": str(site)}
    status, stderr = await _serve(config, env, "--log-level", "CRITICAL")
    line = _the_line(stderr)
    assert status == 6, stderr
    assert "hookline-tts-broken" in line and "deepgram_sdk_v99" in line
    assert "providers.tts" in line and "--verbose-errors" in line


class GatedTTS(ScriptedTTS):
    """Synthesizes nothing until `gate` is set: the phrase cache waits."""

    def __init__(self) -> None:
        super().__init__(ttfb_s=0.01)
        self.gate = trio.Event()

    async def synthesize(self, text, fmt):
        await self.gate.wait()
        return await super().synthesize(text, fmt)


async def test_ready_only_once_phrases_are_cached(nursery, twilio_rest, twilio_secrets):
    tts = GatedTTS()
    config = make_config(
        providers={"telephony": "twilio"},
        telephony={"twilio": {"api_base_url": twilio_rest.url}},
    )
    runtime = Runtime(
        config,
        scripted_plugins([hookline_telephony_twilio]),
        secrets=Secrets(twilio_secrets),
        providers={"stt": ScriptedSTT(), "llm": ScriptedLLM([]), "tts": tts},
    )
    terminate = trio.Event()
    port = await nursery.start(
        lambda task_status: serve_runtime(
            runtime, "127.0.0.1", 0, terminate=terminate, start=True, task_status=task_status
        )
    )
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{base}/healthz")).status_code == 200  # alive while booting
        starting = await client.get(f"{base}/readyz")
        assert starting.status_code == 503
        assert starting.json()["status"] == "starting"
        assert starting.json()["phrases_cached"] is False
        webhook = await client.post(f"{base}/twilio/voice", data={"CallSid": "CA1"})
        assert webhook.status_code == 503  # no call is taken before the phrases exist
        assert not runtime.phrases
        tts.gate.set()
        with trio.fail_after(10):
            while True:
                ready = await client.get(f"{base}/readyz")
                if ready.status_code == 200:
                    break
                await trio.sleep(0.02)
        assert ready.json() == {
            "status": "ready", "phrases_cached": True, "draining": False, "problems": []
        }  # fmt: skip
        assert set(runtime.phrases) == runtime.configured_phrases()
        terminate.set()
        with trio.fail_after(10):
            while True:  # draining: not ready any more (until the listener closes)
                try:
                    response = await client.get(f"{base}/readyz")
                except httpx.TransportError:
                    break
                if response.status_code == 503:
                    assert response.json()["status"] == "draining"
                    break
                await trio.sleep(0.01)


async def test_refused_llm_key_is_one_line_exit_3(tmp_path, fake_stack):
    config = _config(tmp_path, fake_stack.providers_toml())
    env = {**fake_stack.env(), "OPENAI_API_KEY": "sk-not-the-key"}
    status, stderr = await _serve(config, env, "--log-level", "CRITICAL")
    line = _the_line(stderr)
    assert status == 3, stderr
    assert "llm/openai" in line and "OPENAI_API_KEY" in line
    assert not fake_stack.tts.rest_requests  # refused before any phrase was paid for

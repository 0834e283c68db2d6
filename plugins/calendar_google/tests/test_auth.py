"""`hookline auth google`: the installed-app OAuth flow against the loopback fake of
Google's token endpoint, driven without a browser (the consent screen's redirect is an
HTTP request carrying `code` to the command's loopback port)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import trio

from hookline_testkit.fake_google_calendar import FakeGoogleCalendar

TIMEOUT_S = 60


def _config(tmp_path: Path, fake: FakeGoogleCalendar, extra: str = "") -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""
[agent]
name = "Riverside Auto Service"

[providers]
telephony = "twilio"
stt = "deepgram"
llm = "openai"
tts = "deepgram"
tools = ["calendar_google"]

[tools.calendar_google]
token_uri = "{fake.token_uri}"
{extra}
"""
    )
    return path


def _env(fake: FakeGoogleCalendar) -> dict[str, str]:
    return {
        **os.environ,
        "GOOGLE_CLIENT_ID": fake.client_id,
        "GOOGLE_CLIENT_SECRET": fake.client_secret,
        "OAUTHLIB_INSECURE_TRANSPORT": "1",  # the fake's token endpoint is plain http
    }


async def _start(nursery, args: list[str], env: dict[str, str]) -> trio.Process:
    cmd = [sys.executable, "-m", "hookline.cli", "auth", "google", *args]
    return await trio.lowlevel.open_process(
        cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


async def _read_until(stream, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        chunk = await stream.receive_some()
        assert chunk, f"output ended before {marker!r}: {seen!r}"
        seen += chunk
    return seen


def _auth_url(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("http"))


async def _finish(proc: trio.Process) -> tuple[int, str, str]:
    out = b""
    err = b""
    async with trio.open_nursery() as nursery:

        async def drain(stream, sink: list[bytes]) -> None:
            while chunk := await stream.receive_some():
                sink.append(chunk)

        outs: list[bytes] = []
        errs: list[bytes] = []
        nursery.start_soon(drain, proc.stdout, outs)
        nursery.start_soon(drain, proc.stderr, errs)
        await proc.wait()
    out, err = b"".join(outs), b"".join(errs)
    return proc.returncode, out.decode(), err.decode()


async def test_loopback_flow_writes_the_refresh_token_0600(tmp_path, google_calendar_fake, nursery):
    fake = google_calendar_fake
    config = _config(tmp_path, fake, 'refresh_token_file = "secrets/google-refresh-token"')
    proc = await _start(nursery, [str(config), "--no-browser"], _env(fake))
    try:
        with trio.fail_after(TIMEOUT_S):
            printed = await _read_until(proc.stdout, b"\n" + b"http")
            printed += await _read_until(proc.stdout, b"\n") if not printed.endswith(b"\n") else b""
            url = urlsplit(_auth_url(printed.decode()))
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            assert query["access_type"] == "offline" and query["prompt"] == "consent"
            assert query["client_id"] == fake.client_id
            assert query["scope"] == "https://www.googleapis.com/auth/calendar"
            redirect = query["redirect_uri"]
            assert redirect.startswith("http://127.0.0.1:")
            # What Google's consent screen does: send the browser back with the code.
            async with httpx.AsyncClient() as client:
                answer = await client.get(
                    redirect, params={"code": fake.auth_code, "state": query["state"]}
                )
            assert answer.status_code == 200
            status, out, err = await _finish(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert status == 0, err
    stored = tmp_path / "secrets" / "google-refresh-token"
    assert stored.read_text().strip() == fake.refresh_token
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert str(stored) in out and fake.refresh_token not in out  # not printed as well
    [exchange] = fake.code_exchanges
    assert exchange["code"] == fake.auth_code and exchange["redirect_uri"] == redirect
    assert exchange["code_verifier"]  # PKCE, as Google recommends for installed apps


async def test_console_flow_prints_the_export_line(tmp_path, google_calendar_fake, nursery):
    fake = google_calendar_fake
    config = _config(tmp_path, fake)
    proc = await _start(nursery, [str(config), "--console"], _env(fake))
    try:
        with trio.fail_after(TIMEOUT_S):
            printed = await _read_until(proc.stdout, b"here:\n")
            url = urlsplit(_auth_url(printed.decode()))
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            assert query["redirect_uri"] == "http://127.0.0.1:8085/"
            # The address the browser was sent to, pasted back.
            pasted = f"{query['redirect_uri']}?state={query['state']}&code={fake.auth_code}\n"
            await proc.stdin.send_all(pasted.encode())
            status, out, err = await _finish(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert status == 0, err
    assert f"export GOOGLE_REFRESH_TOKEN={fake.refresh_token}" in out.splitlines()


async def test_a_wrong_code_is_one_line(tmp_path, google_calendar_fake, nursery):
    fake = google_calendar_fake
    config = _config(tmp_path, fake)
    proc = await _start(nursery, [str(config), "--console"], _env(fake))
    try:
        with trio.fail_after(TIMEOUT_S):
            await _read_until(proc.stdout, b"here:\n")
            await proc.stdin.send_all(b"not-the-code\n")
            status, _, err = await _finish(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert status == 1
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.startswith("hookline: ")]
    assert "Google OAuth failed" in line and "invalid_grant" in line


async def test_missing_client_id_names_the_variable(tmp_path, google_calendar_fake):
    fake = google_calendar_fake
    config = _config(tmp_path, fake)
    env = {k: v for k, v in _env(fake).items() if k != "GOOGLE_CLIENT_ID"}
    done = await trio.run_process(
        [sys.executable, "-m", "hookline.cli", "auth", "google", str(config), "--console"],
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    err = done.stderr.decode()
    assert done.returncode == 1 and "Traceback" not in err
    assert "GOOGLE_CLIENT_ID" in err and "--client-secrets" in err

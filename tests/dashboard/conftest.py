"""A real `hookline serve` app (Twilio provider, scripted STT/LLM/TTS, analytics, messages,
tow requests) on loopback in a trio thread, and headless Chromium (Debian's `chromium`)
driven by Playwright in the test thread.

The test thread reaches the server's trio loop with `trio.from_thread`: to place a call
through the Twilio simulator, to hold one open, to add a message.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.from_thread

import hookline_example_tow
import hookline_messages
import hookline_telephony_twilio
from hookline.analytics import plugin as analytics_plugin
from hookline.audio import tone_mulaw
from hookline.config import Secrets
from hookline.dashboard.auth import hash_password
from hookline.outbox import webhook as webhook_channel
from hookline.runtime import Runtime
from hookline.server import serve_app
from hookline.testing.harness import make_config, scripted_plugins
from hookline.testing.scripted import Reply, ScriptedLLM, ScriptedSTT, ScriptedTTS
from hookline_testkit.fixtures_twilio import TEST_AUTH_TOKEN
from hookline_testkit.twilio_sim import DEFAULT_ACCOUNT_SID, TwilioSimulator, twilio_rest_fake

PASSWORD = "correct horse battery staple"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MESSAGE_ARGS = '{"name": "Sam Ortiz", "reason": "Wants to know if the brakes are done"}'
# The first call takes a message (a tool round inside the first answer); later ones answer.
ANSWERS = [
    Reply(tool_calls=[("take_message", MESSAGE_ARGS)]),
    "Sure, we can do an oil change on Tuesday morning.",
] + ["Sure, we can do an oil change on Tuesday morning."] * 200


def artifacts_dir() -> Path:
    path = Path(os.environ.get("HOOKLINE_ARTIFACTS", tempfile.gettempdir())) / "dashboard-artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


class Server:
    """The server thread. Start with `start()`; `run(async_fn, *args)` runs on its loop."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.runtime: Runtime | None = None
        self.stt: ScriptedSTT | None = None
        self.sim: TwilioSimulator | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()
        self._stop: trio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="dashboard-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(60) or self._error:
            raise RuntimeError(f"server did not start: {self._error!r}")

    def stop(self) -> None:
        if self._stop is not None and self._token is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(60)

    def run(self, fn: Any, *args: Any) -> Any:
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as e:
            self._error = e
            self._ready.set()

    async def _serve(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with twilio_rest_fake(auth_token=TEST_AUTH_TOKEN) as rest:
            config = make_config(
                providers={"telephony": "twilio", "tools": ["builtin", "messages", "tow_requests"]},
                telephony={"twilio": {"api_base_url": rest.url}},
                analytics={"enabled": True, "database": str(self.workdir / "calls.duckdb")},
                tools={
                    "messages": {"database": str(self.workdir / "messages.duckdb")},
                    "tow_requests": {"database": str(self.workdir / "tows.duckdb")},
                },
                dashboard={"refresh_s": 2.0},
                # A receiver that is never there: what fails shows in the work queue.
                notifications={"webhook": {"url": "http://127.0.0.1:9/hooks"}},
                outbox={"database": str(self.workdir / "outbox.duckdb")},
            )
            self.stt = ScriptedSTT()
            plugins = scripted_plugins(
                [
                    hookline_telephony_twilio,
                    analytics_plugin,
                    hookline_messages,
                    hookline_example_tow,
                    webhook_channel,
                ]
            )
            secrets = {
                "TWILIO_AUTH_TOKEN": TEST_AUTH_TOKEN,
                "TWILIO_ACCOUNT_SID": DEFAULT_ACCOUNT_SID,
                "HOOKLINE_WEBHOOK_SECRET": "w" * 32,
            }
            self.runtime = Runtime(
                config,
                plugins,
                secrets=Secrets(secrets),
                providers={
                    "stt": self.stt,
                    "llm": ScriptedLLM(list(ANSWERS)),
                    "tts": ScriptedTTS(ttfb_s=0.01, chars_per_s=60.0),
                },
            )
            await self.runtime.start()
            self.sim = TwilioSimulator(auth_token=TEST_AUTH_TOKEN, rest=rest)
            try:
                async with trio.open_nursery() as nursery:
                    self.port = await nursery.start(serve_app, self.runtime, "127.0.0.1", 0)
                    self._ready.set()
                    await self._stop.wait()
                    nursery.cancel_scope.cancel()
            finally:
                await self.runtime.aclose()

    # ------------------------------------------------------------------ on the server loop

    async def one_call(self, utterance: str = "I need an oil change", hold: Any = None) -> str:
        """A whole call: greeting, one caller turn, the answer; then hang up (or first
        wait for `hold`, a trio.Event). Returns the call id."""
        assert self.sim is not None and self.runtime is not None and self.stt is not None
        with trio.fail_after(60):
            async with self.sim.call(f"{self.url}/twilio/voice") as call:
                await call.wait_for_audio()
                await call.wait_until_quiet()
                [session] = [
                    s for s in self.runtime.sessions if s.info.provider_call_id == call.call_sid
                ]
                call_id = session.info.call_id
                self.stt.expect(call_id, utterance)
                spoke_at = trio.current_time()
                await call.say(tone_mulaw(0.6))
                await call.wait_for_audio(after=spoke_at)
                await call.wait_until_quiet()
                if hold is not None:
                    await hold.wait()
        await self.wait_flushed()
        return call_id

    async def wait_flushed(self) -> None:
        sink = analytics_plugin.sink_for(self.runtime)
        with trio.fail_after(30):
            while self.runtime.active_calls:  # noqa: ASYNC110 (no "calls ended" event)
                await trio.sleep(0.05)
        await sink.wait_flushed()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed (apt-get install -y chromium; .ci/run does it)")
    previous = os.environ.get("HOOKLINE_DASHBOARD_PASSWORD_HASH")
    os.environ["HOOKLINE_DASHBOARD_PASSWORD_HASH"] = hash_password(PASSWORD)
    with tempfile.TemporaryDirectory(prefix="hookline-dash-") as tmp:
        srv = Server(Path(tmp))
        try:
            srv.start()
            srv.first_call = srv.run(srv.one_call)
            yield srv
        finally:
            srv.stop()
            if previous is None:
                os.environ.pop("HOOKLINE_DASHBOARD_PASSWORD_HASH", None)
            else:
                os.environ["HOOKLINE_DASHBOARD_PASSWORD_HASH"] = previous


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    p = context.new_page()
    p.set_default_timeout(30_000)
    p.csp_errors = []
    p.on(
        "console",
        lambda m: p.csp_errors.append(m.text) if "Content Security Policy" in m.text else None,
    )
    try:
        yield p
    finally:
        context.close()


def sign_in(page: Any, server: Server, path: str = "/admin/") -> None:
    page.goto(server.url + path)
    page.fill("#password", PASSWORD)
    page.click("#sign-in")
    page.wait_for_load_state()


def shot(page: Any, name: str) -> Path:
    path = artifacts_dir() / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path

"""`hookline demo`: one whole phone call, offline, through the real stack.

Everything a deployment runs is real here: the server, the Twilio plugin on a signed
Media Streams socket, the Deepgram STT and TTS plugins, the OpenAI plugin, the calendar
tools (local backend) and analytics. Only the far ends are loopback fakes that speak
the real wire protocols: a Twilio caller, Deepgram, OpenAI and Twilio's REST API.

No model runs here, so the "LLM" is a small scripted stand-in (`DemoBrain`) that makes
the same tool calls a model would (check availability, book, end the call) and reads
the real tool results back. Like a model it has no clock: it books "tomorrow" from the
date the rendered prompt gives it. The caller's speech is a tone; the STT fake supplies the
words. What the demo shows is hookline itself: turn-taking, tools, the transcript and
the latencies it adds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import re
import statistics
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TextIO

import msgspec
import trio

from hookline.audio import tone_mulaw
from hookline.config import Config, Secrets, load_config
from hookline.events import AgentSpoke, ToolCallFinished, TurnMetrics, UserTurnEnded
from hookline.hookspecs import hookimpl
from hookline.plugins import discover
from hookline.runtime import Runtime

__all__ = ["DemoBrain", "add_commands", "prompt_date", "run_demo"]

DEFAULT_CONFIG = Path(__file__).with_name("demo.toml")  # package data of the test kit
CALLER = [
    "Hi, I'd like to book an oil change for tomorrow morning.",
    "The first one please. I'm Sam Rivera, it's a 2018 Honda Civic.",
    "No, that's all. Thanks!",
]
TOKEN = "demo-twilio-auth-token"
DEEPGRAM_KEY = "demo-deepgram-key"  # one key for STT and TTS, as with real Deepgram


# What the shop's prompt says about the date: "Today's date is 2026-11-30."
TODAY_IN_PROMPT = re.compile(r"Today's date is (\d{4}-\d{2}-\d{2})")


def prompt_date(messages: Sequence[Any]) -> dt.date | None:
    """Today's date as the rendered system message gives it (never the clock: a model
    has no clock, and the demo must show that the prompt carries the date)."""
    for m in messages:
        if m.role == "system" and isinstance(m.content, str):
            found = TODAY_IN_PROMPT.search(m.content)
            if found:
                return dt.date.fromisoformat(found.group(1))
    return None


class DemoBrain:
    """Stands in for the model: decides tool calls from the conversation, and speaks
    the real tool results. Called by the OpenAI fake with each request it receives."""

    def __call__(self, request: Any) -> Any:
        from .fake_openai import call, text, tool_calls

        messages = request.chat.messages
        last = messages[-1]
        if last.role == "tool":
            result = msgspec.json.decode(last.content or "{}")
            if result.get("slots"):
                spoken = [s["spoken"] for s in result["slots"][:2]]
                return text(f"I have {' or '.join(spoken)}. Which works for you?")
            if result.get("booked"):
                return text(f"You're all set for {result['appointment']['spoken']}. Anything else?")
            return text(result.get("message") or result.get("error") or "Done.")
        said = (last.content or "").lower() if isinstance(last.content, str) else ""
        if "oil change" in said:
            today = prompt_date(messages)
            if today is None:  # as a real model would be: no date, no booking
                return text("Sorry, I don't know today's date, so I can't book right now.")
            tomorrow = today + dt.timedelta(days=1)  # the caller asked for tomorrow
            args = {"service": "oil change", "earliest": tomorrow.isoformat()}
            return tool_calls(call("check_availability", msgspec.json.encode(args).decode()))
        if "first one" in said:
            slots = self._offered(messages)
            if slots:
                args = {
                    "service": "oil change",
                    "start": slots[0]["start"],
                    "customer_name": "Sam Rivera",
                    "vehicle": "2018 Honda Civic",
                }
                return tool_calls(call("book_appointment", msgspec.json.encode(args).decode()))
        if "that's all" in said or "bye" in said:
            return tool_calls(call("end_call", '{"goodbye": "Thanks for calling, Sam. Bye!"}'))
        return text("Sorry, could you say that again?")

    @staticmethod
    def _offered(messages: Sequence[Any]) -> list[dict[str, Any]]:
        for m in reversed(messages):
            if m.role == "tool" and isinstance(m.content, str) and '"slots"' in m.content:
                return msgspec.json.decode(m.content).get("slots", [])
        return []


class _Transcript:
    """Prints the call as it happens, and keeps the per-turn latencies."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.metrics: list[dict[str, float]] = []
        self.start: float | None = None
        self.end_reason: str | None = None

    @hookimpl
    def hookline_call_ended(self, call: Any, record: Any) -> None:
        self.end_reason = record.end_reason

    def _line(self, t: float, text: str) -> None:
        self.start = self.start if self.start is not None else t
        self.out.write(f"[{t - self.start:6.2f}s] {text}\n")
        self.out.flush()

    @hookimpl
    def hookline_call_event(self, call: Any, event: Any) -> None:
        if isinstance(event, UserTurnEnded):
            self._line(event.t, f"caller: {event.text}")
        elif isinstance(event, AgentSpoke) and event.heard:
            self._line(event.t, f"agent:  {event.text}")
        elif isinstance(event, ToolCallFinished):
            status = "ok" if event.ok else f"failed ({event.error})"
            self._line(event.t, f"        tool {event.tool}: {status}, {event.latency_ms:.0f} ms")
        elif isinstance(event, TurnMetrics):
            m = event.metrics
            self.metrics.append(m)
            parts = [f"{k}={m[k]:.0f}ms" for k in ("voice_to_voice", "runtime_overhead") if k in m]
            self._line(event.t, "        " + " ".join(parts))


def _point_at_fakes(config: Config, fakes: dict[str, Any], workdir: Path | None) -> Config:
    config.stt.setdefault("deepgram", {})["url"] = fakes["stt"].url
    tts = config.tts.setdefault("deepgram", {})
    tts["url"], tts["base_url"] = fakes["tts"].url, fakes["tts"].base_url
    config.llm.setdefault("openai", {})["base_url"] = fakes["llm"].url
    twilio = config.telephony.setdefault("twilio", {})
    twilio["api_base_url"], twilio["public_url"] = fakes["rest"].url, ""
    if "sms" in config.notifications:
        config.notifications["sms"]["api_base_url"] = fakes["rest"].url
    if workdir is not None:
        config.analytics.database = str(workdir / "calls.duckdb")
        config.outbox.database = str(workdir / "outbox.duckdb")
        for section, key in (("calendar_google", "database"), ("tow_requests", "database")):
            if section in config.tools:
                config.tools[section][key] = str(workdir / f"{section}.data")
    return config


def _secrets(config: Config, fakes: dict[str, Any]) -> Secrets:
    env = {
        config.stt.get("deepgram", {}).get("api_key_env", "DEEPGRAM_API_KEY"): fakes["stt"].api_key,
        config.tts.get("deepgram", {}).get("api_key_env", "DEEPGRAM_API_KEY"): fakes["tts"].api_key,
        config.llm.get("openai", {}).get("api_key_env", "OPENAI_API_KEY"): fakes["llm"].api_key,
        config.telephony.get("twilio", {}).get("auth_token_env", "TWILIO_AUTH_TOKEN"): TOKEN,
        config.telephony.get("twilio", {}).get("account_sid_env", "TWILIO_ACCOUNT_SID"): (
            fakes["rest"].account_sid
        ),
        config.analytics.hash_salt_env: "demo-salt",
    }
    return Secrets(env)


async def run_demo(
    config_path: str | Path = DEFAULT_CONFIG,
    *,
    out: TextIO = sys.stdout,
    workdir: Path | None = None,
    lines: Sequence[str] = CALLER,
    speech_chars_per_s: float = 25.0,
) -> dict[str, Any]:
    """Run the demo call; returns a summary (end reason, turns, latency percentiles)."""
    from hookline.server import serve_runtime

    from .fake_deepgram_stt import fake_deepgram_stt
    from .fake_deepgram_tts import serve_fake_deepgram_tts
    from .fake_openai import fake_openai
    from .twilio_sim import SimulatorError, TwilioSimulator, twilio_rest_fake

    config = load_config(config_path)
    async with AsyncExitStack() as stack:
        fakes = {
            "stt": await stack.enter_async_context(fake_deepgram_stt(api_key=DEEPGRAM_KEY)),
            # Fixed provider latencies, so what varies is hookline: 150 ms to first audio
            # byte, 200 ms to first token, speech at a brisk 25 characters a second.
            "tts": await stack.enter_async_context(
                serve_fake_deepgram_tts(
                    api_key=DEEPGRAM_KEY, chars_per_second=speech_chars_per_s, ttfb_s=0.15
                )
            ),
            "llm": await stack.enter_async_context(fake_openai(ttft_s=0.2, tokens_per_s=60)),
            "rest": await stack.enter_async_context(twilio_rest_fake(auth_token=TOKEN)),
        }
        config = _point_at_fakes(config, fakes, workdir)
        fakes["llm"].responder = DemoBrain()
        fakes["stt"].default_script.extend(lines)
        transcript = _Transcript(out)
        runtime = Runtime(config, discover(), secrets=_secrets(config, fakes))
        runtime.plugins.pm.register(transcript, name="demo-transcript")
        await runtime.start()
        terminate = trio.Event()
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                lambda task_status: serve_runtime(
                    runtime, "127.0.0.1", 0, terminate=terminate, task_status=task_status
                )
            )
            sim = TwilioSimulator(auth_token=TOKEN, rest=fakes["rest"])
            out.write(f"hookline demo: calling http://127.0.0.1:{port}/twilio/voice\n")
            async with sim.call(f"http://127.0.0.1:{port}/twilio/voice") as call:
                await call.wait_for_audio()
                await call.wait_until_quiet(0.6)
                for line in lines:
                    if call.closed.is_set():
                        break
                    await call.say(tone_mulaw(0.07 * len(line)))
                    try:
                        with trio.move_on_after(20):
                            await call.wait_for_audio(after=trio.current_time())
                            await call.wait_until_quiet(0.8)
                    except SimulatorError:  # the agent ended the call
                        break
                with trio.move_on_after(10):
                    await call.wait_closed()
            await _show_texts(runtime, fakes["rest"], out)
            terminate.set()
    v2v = [m["voice_to_voice"] for m in transcript.metrics if "voice_to_voice" in m]
    overhead = [m["runtime_overhead"] for m in transcript.metrics if "runtime_overhead" in m]
    summary = {
        "agent_turns_measured": len(v2v),
        "voice_to_voice_ms_median": round(statistics.median(v2v), 1) if v2v else None,
        "runtime_overhead_ms_median": round(statistics.median(overhead), 1) if overhead else None,
        "end_reason": transcript.end_reason,
        "texts_sent": len(fakes["rest"].messages),
        "analytics_database": str(config.resolve_path(config.analytics.database)),
    }
    out.write(msgspec.json.encode(summary).decode() + "\n")
    return summary


async def _show_texts(runtime: Runtime, rest: Any, out: TextIO) -> None:
    """Wait (briefly) for the outbox to deliver what the call enqueued, then print the
    texts as the caller's phone shows them."""
    store = runtime.outbox.store
    if store is None:
        return
    with trio.move_on_after(15):
        while True:
            rows = await store.run(store.recent_sync, 20)
            if all(n.status != "pending" for n in rows):
                break
            await trio.sleep(0.1)
    for message in rest.messages:
        out.write(f"text to {message.to} from {message.from_}:\n    {message.body}\n")
    for n in await store.run(store.recent_sync, 20):
        if n.status != "sent":
            out.write(f"notification {n.id} ({n.kind}) {n.status}: {n.last_error}\n")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="one whole simulated call, offline, through the real stack")
    p.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG))
    p.add_argument(
        "--workdir", default="data/demo", help="where the databases go (default data/demo)"
    )
    p.set_defaults(func=_demo_command)


def _demo_command(args: argparse.Namespace) -> int:
    if not args.verbose:  # the transcript is the output; logs only for problems
        logging.getLogger().setLevel(logging.WARNING)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    summary = trio.run(lambda: run_demo(args.config, workdir=workdir.resolve()))
    return 0 if summary["agent_turns_measured"] else 1

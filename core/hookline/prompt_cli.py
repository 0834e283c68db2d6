"""`hookline prompt CONFIG [--from NUMBER] [--at ISO-TIME]`: print the system message a
call would start with, rendered by the same function the engine calls.

Only the tools are built (the model would see their names in `tools`); telephony, STT,
the LLM and TTS are stood in by the scripted providers, so their keys are not needed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
from zoneinfo import ZoneInfo

from .config import Config, Secrets, secret_keys
from .errors import HooklineError
from .plugins import Plugins
from .providers import CallInfo
from .runtime import Runtime, new_call_id, resolve

__all__ = ["add_commands", "parse_at", "preview_runtime", "render_preview"]

log = logging.getLogger("hookline.prompt")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prompt", help="print the system prompt the model gets for a call (rendered)"
    )
    p.add_argument("config", help="the TOML config file")
    p.add_argument(
        "--from",
        dest="from_number",
        default="",
        metavar="NUMBER",
        help="the caller's number, e.g. +13125550100 (default: a withheld caller id)",
    )
    p.add_argument(
        "--at",
        default=None,
        metavar="ISO-TIME",
        help="render as of this time, e.g. 2026-12-24T17:30 (in agent.timezone unless it "
        "has an offset; default: now)",
    )
    p.set_defaults(func=cmd_prompt)


def parse_at(text: str | None, timezone: str) -> dt.datetime:
    """`--at`: an ISO date or date-time; without an offset it is the shop's local time."""
    if text is None:
        return dt.datetime.now(dt.UTC)
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise HooklineError(
            f"--at {text!r}: not an ISO date or time (use e.g. 2026-12-24T17:30)"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(timezone))
    return value.astimezone(dt.UTC)


def preview_runtime(config: Config, plugins: Plugins, *, stand_in_secrets: bool = False) -> Runtime:
    """A runtime with the configured tools and scripted stand-ins for the providers.

    `stand_in_secrets`: a tool set's secrets that are not set get a placeholder, so a
    prompt can be previewed on a machine without the shop's keys (what such a tool would
    look up, like the caller's appointments, is then left out; a warning says so).
    """
    from .testing.harness import ScriptedTelephony
    from .testing.scripted import ScriptedLLM, ScriptedSTT, ScriptedTTS

    providers = {
        "telephony": ScriptedTelephony(),
        "stt": ScriptedSTT(),
        "llm": ScriptedLLM(),
        "tts": ScriptedTTS(),
    }
    secrets = Secrets()
    if stand_in_secrets:
        resolved = resolve(config, plugins)
        missing = [
            env
            for settings in resolved.toolset_settings.values()
            if settings is not None
            for env in secret_keys(settings).values()
            if secrets.optional(env) is None
        ]
        if missing:
            log.warning(
                "not set: %s; the tools are built with placeholders and look nothing up",
                ", ".join(sorted(set(missing))),
            )
            secrets = Secrets({**os.environ, **dict.fromkeys(missing, "unset-for-preview")})
    return Runtime(config, plugins, secrets=secrets, providers=providers)


def render_preview(config: Config, plugins: Plugins, from_number: str, at: dt.datetime) -> str:
    from .prompt import check_prompt, render_prompt

    runtime = preview_runtime(config, plugins, stand_in_secrets=True)
    try:
        check_prompt(runtime, at)
        call = CallInfo(call_id=new_call_id(), from_number=from_number, to_number="prompt")
        return render_prompt(runtime, call, at)
    finally:
        runtime.stop()  # the tool sets close what they opened (the calendar's file)


def cmd_prompt(args: argparse.Namespace) -> int:
    from .commands import _load

    config, plugins = _load(args.config)
    at = parse_at(args.at, config.agent.timezone)
    text = render_preview(config, plugins, args.from_number, at)
    sys.stdout.write(
        f"{text}\n" if text else "(no instructions: the model gets no system message)\n"
    )
    return 0

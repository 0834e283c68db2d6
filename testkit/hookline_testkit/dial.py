"""`hookline dial URL`: place simulated Twilio calls against a running server.

Each call does what a short real call does: the signed webhook, the media stream, the
greeting heard to its end, one utterance (a tone: an offline stack's scripted STT takes
it for speech; a real STT hears no words, so use --greeting-only there), the answer
heard, then a hang-up. `--calls N` places N at once (a load test); the
summary is one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from dataclasses import asdict, dataclass

import trio

from hookline.audio import tone_mulaw
from hookline.errors import HooklineError, MissingSecret

from .twilio_sim import DEFAULT_ACCOUNT_SID, SimulatorError, TwilioSimulator, WebhookRefused

__all__ = ["CallResult", "add_commands", "dial", "summarize"]

log = logging.getLogger("hookline.dial")


@dataclass
class CallResult:
    outcome: str = "failed"  # "completed" | "busy" | "refused" | "failed"
    error: str = ""
    greeting_ms: float | None = None  # `start` sent -> first agent audio
    answer_ms: float | None = None  # end of the caller's utterance -> first answer audio
    agent_seconds: float = 0.0
    marks: int = 0
    clears: int = 0


async def dial_one(
    sim: TwilioSimulator,
    url: str,
    *,
    say_s: float,
    call_timeout_s: float,
    hold_s: float,
    answer: bool = True,
    sign_url: str | None = None,
    media_url: str | None = None,
) -> CallResult:
    result = CallResult()
    try:
        with trio.fail_after(call_timeout_s):
            async with sim.call(url, sign_url=sign_url, connect_url=media_url) as call:
                first = await call.wait_for_audio()
                assert call.started_at is not None
                result.greeting_ms = (first - call.started_at) * 1000
                await call.wait_until_quiet()
                if answer:
                    await call.say(tone_mulaw(say_s))
                    said = trio.current_time()
                    answered = await call.wait_for_audio(after=said)
                    result.answer_ms = (answered - said) * 1000
                    await call.wait_until_quiet()
                await trio.sleep(hold_s)
                result.agent_seconds = call.agent_seconds
                result.marks = len(call.marks_echoed)
                result.clears = len(call.clears)
        result.outcome = "completed"
    except WebhookRefused as e:
        result.outcome = "busy" if e.busy else "refused"
        result.error = f"HTTP {e.webhook.status_code}"
    except trio.TooSlowError:
        result.error = f"no progress within {call_timeout_s:.0f} s"
    except (SimulatorError, OSError, HooklineError) as e:
        result.error = f"{type(e).__name__}: {e}"
    except Exception as e:  # a load test reports every failure, it never stops at one
        result.error = f"{type(e).__name__}: {e}"
    return result


async def dial(
    url: str,
    *,
    calls: int = 1,
    auth_token: str | None,
    account_sid: str = DEFAULT_ACCOUNT_SID,
    say_s: float = 0.8,
    call_timeout_s: float = 30.0,
    hold_s: float = 0.0,
    stagger_s: float = 0.0,
    answer: bool = True,
    sign_url: str | None = None,
    media_url: str | None = None,
) -> list[CallResult]:
    """Place `calls` simulated calls at once (each `stagger_s` after the previous).

    Behind a proxy, `sign_url` is the webhook URL as Twilio knows it (what is signed)
    and `media_url` where to open the stream instead of the TwiML's URL (still signed
    with the TwiML's URL, as Twilio does)."""
    sim = TwilioSimulator(auth_token=auth_token, account_sid=account_sid)
    results: list[CallResult] = [CallResult() for _ in range(calls)]

    async def one(i: int) -> None:
        await trio.sleep(i * stagger_s)
        results[i] = await dial_one(
            sim,
            url,
            say_s=say_s,
            call_timeout_s=call_timeout_s,
            hold_s=hold_s,
            answer=answer,
            sign_url=sign_url,
            media_url=media_url,
        )

    async with trio.open_nursery() as nursery:
        for i in range(calls):
            nursery.start_soon(one, i)
    return results


def _percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 1)

    return {"p50": at(0.5), "p95": at(0.95), "max": round(ordered[-1], 1)}


def summarize(results: list[CallResult]) -> dict:
    outcomes = {
        k: sum(r.outcome == k for r in results) for k in ("completed", "busy", "refused", "failed")
    }
    errors: dict[str, int] = {}
    for r in results:
        if r.error:
            errors[r.error] = errors.get(r.error, 0) + 1
    return {
        "calls": len(results),
        **outcomes,
        "greeting_ms": _percentiles([r.greeting_ms for r in results if r.greeting_ms is not None]),
        "answer_ms": _percentiles([r.answer_ms for r in results if r.answer_ms is not None]),
        "errors": errors,
    }


def _dial_command(args: argparse.Namespace) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per webhook
    if args.unsigned:
        token = None
    else:
        token = os.environ.get(args.auth_token_env) or None
        if token is None:
            raise MissingSecret(args.auth_token_env, key="--auth-token-env (or pass --unsigned)")
    results = trio.run(
        lambda: dial(
            args.url,
            calls=args.calls,
            auth_token=token,
            account_sid=args.account_sid,
            say_s=args.say,
            call_timeout_s=args.timeout,
            hold_s=args.hold,
            stagger_s=args.stagger,
            answer=not args.greeting_only,
            sign_url=args.sign_url,
            media_url=args.media_url,
        )
    )
    summary = summarize(results)
    if args.verbose_results:
        summary["results"] = [asdict(r) for r in results]
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0 if summary["completed"] == len(results) else 2


def _positive(kind: type) -> object:
    def parse(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"must not be negative: {text}")
        return value

    return parse


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "dial",
        help="place simulated Twilio calls against a running server",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument(
        "url", metavar="URL", help="the voice webhook, e.g. http://127.0.0.1:8080/twilio/voice"
    )
    p.add_argument(
        "--calls", type=_positive(int), default=1, help="calls placed at once (default 1)"
    )
    p.add_argument("--say", type=_positive(float), default=0.8, help="seconds the caller speaks")
    p.add_argument(
        "--hold", type=_positive(float), default=0.0, help="seconds to stay on after the answer"
    )
    p.add_argument(
        "--stagger", type=_positive(float), default=0.0, help="seconds between call starts"
    )
    p.add_argument(
        "--timeout", type=_positive(float), default=30.0, help="seconds one call may take"
    )
    p.add_argument(
        "--auth-token-env",
        default="TWILIO_AUTH_TOKEN",
        help="env var holding the auth token used to sign",
    )
    p.add_argument("--account-sid", default=DEFAULT_ACCOUNT_SID, help="AccountSid the calls claim")
    p.add_argument(
        "--unsigned", action="store_true", help="send no signatures (server has validation off)"
    )
    p.add_argument(
        "--results", dest="verbose_results", action="store_true", help="include every call's result"
    )
    p.add_argument(
        "--greeting-only",
        action="store_true",
        help="hang up after the greeting (for a server whose STT hears no words in a tone)",
    )
    p.add_argument(
        "--sign-url", help="the webhook URL as Twilio knows it (the server's public_url)"
    )
    p.add_argument("--media-url", help="open the media stream here instead of the TwiML's URL")
    p.set_defaults(func=_dial_command)

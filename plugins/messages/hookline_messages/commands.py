"""`hookline messages CONFIG`: the messages the agent took, newest first
(entry point group `hookline.commands`)."""

from __future__ import annotations

import argparse
import sys

from hookline import ConfigError, build_storage, load_config

from .store import STATUSES, Message

__all__ = ["add_commands", "format_messages"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "messages",
        help="messages the agent took for a call back",
        description="List the messages take_message stored: id, time, name, callback "
        "number, reason, urgency and status.",
    )
    p.add_argument("config", metavar="CONFIG")
    p.add_argument("--status", choices=STATUSES, help="only messages with this status")
    p.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    p.set_defaults(func=_messages_command)


def _messages_command(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise ConfigError("--limit must be at least 1")
    from . import store_for

    config = load_config(args.config)
    storage = build_storage(config)  # the server's `[storage]`: its file, or PostgreSQL
    try:
        found = store_for(config, storage).recent_sync(args.limit, args.status)
    finally:
        storage.close()
    sys.stdout.write(format_messages(found) + "\n")
    return 0


def format_messages(messages: list[Message]) -> str:
    if not messages:
        return "no messages taken yet"
    headers = ("id", "time (UTC)", "name", "callback", "reason", "urgency", "status")
    rows = [
        (
            m.id,
            m.created.strftime("%Y-%m-%d %H:%M"),
            m.name,
            m.callback_number,
            m.reason if len(m.reason) <= 40 else m.reason[:37] + "...",
            m.urgency,
            m.status,
        )
        for m in messages
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)

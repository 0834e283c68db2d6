"""`hookline outbox CONFIG`: the notifications, newest first, with their status;
`hookline outbox CONFIG retry ID`: make one pending again (due now, attempts reset).

It reads the outbox where the config's `[storage]` keeps it, while the server runs: the
DuckDB file (both open it only for one operation at a time), or the PostgreSQL database
(the URL from the environment variable `[storage] url_variable`). A requeued
notification is sent by a running server's sender at its next look (`[outbox]
poll_s`), or by the next server started."""

from __future__ import annotations

import argparse
import sys

from ..config import load_config
from ..errors import ConfigError
from .store import STATUSES, Notification

__all__ = ["add_commands", "format_notifications"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "outbox",
        help="notifications sent, pending and failed; retry one",
        description="List the outbox's notifications (id, time, channel, kind, recipient, "
        "status, attempts, last error), or `retry ID` to send one again.",
    )
    p.add_argument("config", metavar="CONFIG")
    p.add_argument("action", nargs="?", choices=("list", "retry"), default="list")
    p.add_argument("id", nargs="?", metavar="ID", help="the notification to retry")
    p.add_argument("--status", choices=STATUSES, help="only notifications with this status")
    p.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    p.set_defaults(func=_outbox_command)


def _outbox_command(args: argparse.Namespace) -> int:
    from ..runtime import build_storage, outbox_store  # the runtime, only when run

    config = load_config(args.config)
    if args.action == "retry" and not args.id:
        raise ConfigError("retry needs the notification's ID (see `hookline outbox CONFIG`)")
    if args.action == "list" and args.id:
        raise ConfigError("an ID is only for `retry`")
    if args.limit < 1:
        raise ConfigError("--limit must be at least 1")
    storage = build_storage(config)  # the same `[storage]` as the server's
    try:
        store = outbox_store(config, storage)
        if args.action == "retry":
            absent = store.path is not None and not store.path.exists()  # made by none
            found = None if absent else store.requeue_sync(args.id)
            if found is None:
                raise ConfigError(f"no notification {args.id!r} in {store.describe()}")
            sys.stdout.write(
                f"{found.id}: pending again ({found.channel}, {found.kind or found.key})\n"
            )
            return 0
        rows = store.recent_sync(args.limit, args.status)
    finally:
        storage.close()
    sys.stdout.write(format_notifications(rows) + "\n")
    return 0


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def format_notifications(rows: list[Notification]) -> str:
    if not rows:
        return "no notifications yet"
    headers = ("id", "time (UTC)", "channel", "kind", "to", "status", "tries", "last error")
    table = [
        (
            n.id,
            n.created.strftime("%Y-%m-%d %H:%M:%S") if n.created else "",
            n.channel,
            n.kind or n.key,
            n.to,
            n.status,
            str(n.attempts),
            _short(n.last_error, 60),
        )
        for n in rows
    ]
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
    return "\n".join(line.rstrip() for line in lines)

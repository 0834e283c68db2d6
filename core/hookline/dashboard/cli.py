"""`hookline dashboard CONFIG [--data DIR]` and `hookline dashboard hash-password`.

Alone, the dashboard reads the finished calls of every server from the Parquet segments
folder (`[analytics] segments`) while they run, else the analytics file of a stopped
server (read-only), or a folder written by `hookline analytics export`; a running server
shows it under /admin.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

import trio

from ..errors import ConfigError
from . import PREFIX
from .auth import hash_password

__all__ = ["add_commands"]


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "dashboard",
        help="serve the web dashboard alone (or: dashboard hash-password)",
        usage="hookline dashboard CONFIG [--data DIR] [--host H] [--port P]\n"
        "       hookline dashboard hash-password",
    )
    p.add_argument("config", metavar="CONFIG", help="the TOML config file, or hash-password")
    p.add_argument("--data", metavar="DIR", help="an exported Parquet folder to show instead")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    p.add_argument("--port", type=int, default=8081, help="port to listen on (default 8081)")
    p.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    if args.config == "hash-password":
        return _hash_password()
    from ..analytics.segments import has_segments
    from ..config import load_config
    from ..server import serve_asgi
    from . import Analytics, build_dashboard, open_file, open_parquet, segments_analytics

    config = load_config(args.config)
    folder = config.analytics_segments
    if args.data:
        source = "parquet"
        analytics = Analytics(open_parquet(Path(args.data)), config.agent.timezone)
    elif folder is not None and has_segments(folder):
        source = "segments"
        analytics = segments_analytics(folder, config.agent.timezone)
    else:
        source = "file"
        opener = open_file(config.resolve_path(config.analytics.database))
        analytics = Analytics(opener, config.agent.timezone, keep_open=False)
    trio.run(analytics.run, lambda cur: None)  # fail now, in one line, if it cannot open
    app = build_dashboard(config, analytics, source=source)

    async def serve() -> None:
        from ..server import asgi_app

        await serve_asgi(asgi_app([], mounts=[(PREFIX, app)]), args.host, args.port)

    sys.stderr.write(f"dashboard on http://{args.host}:{args.port}{PREFIX}/\n")
    try:
        trio.run(serve)
    finally:
        analytics.close()
    return 0


def _hash_password() -> int:
    if sys.stdin.isatty():
        first = getpass.getpass("dashboard password: ")
        if first != getpass.getpass("again: "):
            raise ConfigError("the two passwords differ")
    else:
        first = sys.stdin.readline().rstrip("\n")
    if len(first) < 10:
        raise ConfigError("use a password of at least 10 characters")
    sys.stdout.write(hash_password(first) + "\n")
    return 0

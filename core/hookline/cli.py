"""The `hookline` command line.

Subcommands live next to what they drive: each module below offers
`add_commands(subparsers)`; this file only assembles them and turns user mistakes
(`HooklineError`) into one line on stderr and exit status 1, never a traceback.

Exit status: 0 done; 1 a mistake in a file or a value (one line on stderr naming the file
and the dotted key: `hookline: agent.toml: server.port: expected `int` <= 65535`); 2 the
command line itself is wrong (argparse's usage line and error); 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from .errors import HooklineError

__all__ = ["main"]

# Modules that contribute subcommands, in the order `hookline --help` lists them.
COMMAND_MODULES = (
    "hookline.commands",
    "hookline.demo",
    "hookline.server",
    "hookline.analytics.cli",
    "hookline.testing.dial",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hookline", description="Phone voice agent runtime")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # the module exists but something it imports is missing
                raise
            continue
        module.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except HooklineError as e:
        sys.stderr.write(f"hookline: {e}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The `hookline` command line.

Subcommands live next to what they drive: each module below offers
`add_commands(subparsers)`; this file only assembles them and turns user mistakes
(`HooklineError`) into one line on stderr and exit status 1, never a traceback.

Exit status: 0 done; 1 a mistake in a file or a value (one line on stderr naming the file
and the dotted key: `hookline: agent.toml: server.port: expected `int` <= 65535`); 2 the
command line itself is wrong (argparse's usage line and error); 130 interrupted.

Installed distributions add commands the same way, through the entry point group
`hookline.commands` (the test kit adds `demo` and `dial`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from . import __version__
from .errors import HooklineError

__all__ = ["main"]

# Modules that contribute subcommands, in the order `hookline --help` lists them.
COMMAND_MODULES = (
    "hookline.commands",
    "hookline.prompt_cli",
    "hookline.server",
    "hookline.analytics.cli",
    "hookline.dashboard.cli",
)
# Commands the test kit contributes; without it they say how to get it.
KIT_COMMANDS = ("demo", "dial")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hookline", description="Phone voice agent runtime")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"hookline {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # the module exists but something it imports is missing
                raise
            continue
        module.add_commands(sub)
    for ep in entry_points(group="hookline.commands"):
        try:
            ep.load().add_commands(sub)
        except Exception as e:  # a broken add-on must not take `hookline check` down with it
            logging.getLogger(__name__).warning("commands of %s failed to load: %s", ep.value, e)
    for name in KIT_COMMANDS:
        if name not in sub.choices:
            _add_missing_kit_command(sub, name)
    return parser


def _add_missing_kit_command(sub: argparse._SubParsersAction, name: str) -> None:
    # prefix_chars="\0": every argument given is taken as a positional, so the one-line
    # answer below comes whatever options were typed.
    p = sub.add_parser(
        name,
        help="(needs the test kit: pip install hookline-testkit)",
        prefix_chars="\0",
        add_help=False,
    )
    p.add_argument("rest", nargs="*")

    def missing(args: argparse.Namespace) -> int:
        raise HooklineError(f"{name} comes with the test kit: pip install hookline-testkit")

    p.set_defaults(func=missing)


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

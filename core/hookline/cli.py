"""The `hookline` command line.

Subcommands live next to what they drive: each module below offers
`add_commands(subparsers)`; this file only assembles them and turns user mistakes and
start-up failures (`HooklineError`) into one line on stderr and an exit status, never a
traceback.

Exit status (one line on stderr says what and how to fix it):

    0    done
    1    a mistake in a file or a value, or a file that cannot be read (names the file
         and the dotted key: `hookline: agent.toml: server.port: expected `int` <= 65535`),
         or a secret missing from the environment
    2    the command line itself is wrong (argparse's usage line and error)
    3    a provider refused the credentials at start-up (names the provider and the
         environment variable holding the key)
    4    a provider could not be reached at start-up, still failing after retrying for
         `[server] startup_timeout_s` (names the provider and the URL setting to check)
    5    the server cannot listen on its address (port taken, or not ours to use)
    6    a plugin the config chooses failed to import (names the distribution; see
         `hookline plugins --verbose-errors`)
    130  interrupted (Ctrl-C before the server was up)

Logging: `--log-level` and `--log-format text|json` (before the command) win over the
config file's `[logging]` section; see hookline/logs.py.

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

from . import __version__, logs
from .errors import HooklineError

__all__ = ["main"]

# Modules that contribute subcommands, in the order `hookline --help` lists them.
COMMAND_MODULES = (
    "hookline.commands",
    "hookline.prompt_cli",
    "hookline.server",
    "hookline.analytics.cli",
    "hookline.outbox.cli",
    "hookline.dashboard.cli",
)
# Commands the test kit contributes; without it they say how to get it.
KIT_COMMANDS = ("demo", "dial")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hookline",
        description="Phone voice agent runtime",
        epilog=_exit_statuses(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        help="log level (overrides [logging] level; default INFO)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="log lines as text or one JSON object per line (overrides [logging] format)",
    )
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


def _exit_statuses() -> str:
    """The exit status table of this module's docstring, for `hookline --help`."""
    doc = __doc__ or ""
    start = doc.find("Exit status")
    end = doc.find("Logging:", start)
    return doc[start:end].strip() if start >= 0 and end > start else ""


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
    logs.configure(args.log_level or ("DEBUG" if args.verbose else None), args.log_format)
    try:
        try:
            return int(args.func(args) or 0)
        except BaseExceptionGroup as group:
            raise _first_hookline_error(group) from None
    except HooklineError as e:
        sys.stderr.write(f"hookline: {e}\n")
        return int(getattr(e, "exit_code", 1))
    except KeyboardInterrupt:
        return 130


def _first_hookline_error(group: BaseExceptionGroup) -> BaseException:
    """Concurrent start-up work (phrases synthesized in parallel) fails as a group;
    the user needs one of its errors, the first we raised on purpose. A group holding
    anything else is a bug and is raised whole, traceback and all."""
    matched, rest = group.split(HooklineError)
    if matched is None or rest is not None:
        return group
    while isinstance(matched, BaseExceptionGroup):
        matched = matched.exceptions[0]
    return matched


if __name__ == "__main__":
    sys.exit(main())

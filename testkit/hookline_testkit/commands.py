"""The commands the test kit adds to `hookline` (entry point group `hookline.commands`)."""

from __future__ import annotations

import argparse

from . import demo, dial

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    demo.add_commands(sub)
    dial.add_commands(sub)

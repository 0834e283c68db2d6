"""Commands contributed through `hookline.commands`, and what `hookline` says without them."""

from __future__ import annotations

import pytest

import hookline
from hookline import cli


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"hookline {hookline.__version__}\n"


def test_the_kit_contributes_demo_and_dial():
    commands = cli.build_parser()._subparsers._group_actions[0].choices
    assert commands["demo"].get_default("func").__module__ == "hookline_testkit.demo"
    assert commands["dial"].get_default("func").__module__ == "hookline_testkit.dial"


@pytest.mark.parametrize(
    "argv", [["demo"], ["demo", "my.toml", "--workdir", "x"], ["dial", "http://h", "--calls", "3"]]
)
def test_without_the_kit_one_line_says_how_to_get_it(monkeypatch, capsys, argv):
    monkeypatch.setattr(cli, "entry_points", lambda group: [])
    assert cli.main(argv) == 1
    assert capsys.readouterr().err == (
        f"hookline: {argv[0]} comes with the test kit: pip install hookline-testkit\n"
    )


def test_a_broken_command_provider_leaves_the_others_working(monkeypatch, capsys, caplog):
    class Broken:
        value = "broken_kit.commands"

        def load(self):
            raise ImportError("No module named 'twilio'")

    monkeypatch.setattr(cli, "entry_points", lambda group: [Broken()])
    assert cli.main(["demo"]) == 1
    assert capsys.readouterr().err == (
        "hookline: demo comes with the test kit: pip install hookline-testkit\n"
    )
    assert caplog.messages == [
        "commands of broken_kit.commands failed to load: No module named 'twilio'"
    ]

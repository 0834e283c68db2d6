"""`hookline chat CONFIG --offline`: a conversation with no key and no network, as a
user runs it (a subprocess reading stdin)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import hookline_testkit

DEMO = Path(hookline_testkit.__file__).with_name("demo.toml")
HOOKLINE = str(Path(sys.executable).with_name("hookline"))  # the installed command


def _demo_config(tmp_path: Path) -> Path:
    """The demo config and its prompt, copied: its databases go next to it, in tmp_path."""
    shutil.copytree(DEMO.with_name("prompts"), tmp_path / "prompts")
    return Path(shutil.copy(DEMO, tmp_path / "demo.toml"))


def test_chat_offline_end_to_end(tmp_path):
    config = _demo_config(tmp_path)
    env = {k: v for k, v in os.environ.items() if "OPENAI" not in k}  # no key anywhere
    done = subprocess.run(
        [HOOKLINE, "chat", str(config), "--offline"],
        input="I need an oil change tomorrow\nthe first one please\n",
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("agent> Thanks for calling")
    assert "[check_availability(" in out and "Which works for you?" in out  # line one
    assert '"booked":true' in out and "You're all set for" in out  # line two
    assert "Traceback" not in done.stderr


def test_chat_base_url_needs_no_key_for_a_local_server(tmp_path):
    config = _demo_config(tmp_path)
    env = {k: v for k, v in os.environ.items() if "OPENAI" not in k}
    done = subprocess.run(
        [HOOKLINE, "chat", str(config), "--base-url",
         "http://127.0.0.1:9/v1"],
        input="",
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )  # fmt: skip
    # No "missing secret" error: the key is optional away from api.openai.com; input ends
    # at once, so nothing is sent to the (closed) port.
    assert done.returncode == 0, done.stderr
    assert "OPENAI_API_KEY" not in done.stderr

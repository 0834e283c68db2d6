"""The deploy recipes agree with the workspace and with the server's own settings.

deploy/Dockerfile installs the plugins its PLUGINS build argument names; compose builds
with the same list; the systemd unit parses (systemd-analyze, where installed) and stops
the server with SIGTERM and longer than the server drains. Fast, no network, no builds:
the image itself was built by hand (docs/deploy.md says how).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from hookline.config import ServerConfig

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def _dockerfile_plugins() -> list[str]:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    (value,) = re.findall(r'^ARG PLUGINS="([^"]*)"$', text, flags=re.M)
    return value.split()


def _workspace_plugins() -> set[str]:
    """Distributions under plugins/ and examples/ (what the image can install)."""
    names = set()
    for pyproject in [
        *ROOT.glob("plugins/*/pyproject.toml"),
        *ROOT.glob("examples/*/pyproject.toml"),
    ]:
        names.add(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["name"])
    return names


def _unit() -> dict[str, dict[str, list[str]]]:
    """The unit file as systemd reads it: sections of keys, a key may repeat."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for number, raw in enumerate(
        (DEPLOY / "hookline.service").read_text(encoding="utf-8").splitlines(), 1
    ):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert current is not None and sep, f"hookline.service:{number}: not a setting: {raw}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_the_default_image_has_every_workspace_plugin_and_nothing_else() -> None:
    listed = _dockerfile_plugins()
    assert len(listed) == len(set(listed))
    assert set(listed) == _workspace_plugins()


def test_compose_builds_with_the_dockerfiles_plugin_list() -> None:
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    (block,) = re.findall(r"PLUGINS: >-\n((?:\s{10}\S.*\n)+)", text)
    assert block.split() == _dockerfile_plugins()


def test_the_dockerfile_builds_wheels_and_runs_unprivileged() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert "uv build --all-packages" in text
    assert "--constraint /constraints.txt" in text  # versions from uv.lock
    (user,) = re.findall(r"^USER (\S+)$", text, flags=re.M)
    assert not user.startswith(("0", "root"))
    assert re.findall(r"^STOPSIGNAL (\S+)$", text, flags=re.M) == ["SIGTERM"]


def test_the_unit_stops_with_sigterm_after_the_drain_and_keeps_its_files_to_itself() -> None:
    service = _unit()["Service"]
    drain = ServerConfig().drain_timeout_s
    assert service["KillSignal"] == ["SIGTERM"]
    assert float(service["TimeoutStopSec"][0]) > drain
    assert service["ProtectSystem"] == ["strict"]
    assert service["DynamicUser"] == ["yes"]
    state = f"/var/lib/{service['StateDirectory'][0]}"
    assert service["ReadWritePaths"] == [state]
    assert service["EnvironmentFile"][0].startswith("/etc/hookline/")
    assert all(e.split()[0] == "/opt/hookline/bin/hookline" for e in service["ExecStart"])


def test_compose_stops_later_than_the_drain() -> None:
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    (grace,) = re.findall(r"stop_grace_period: (\d+)s", text)
    assert int(grace) > ServerConfig().drain_timeout_s


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    """systemd's own parser, where the machine has it (the pure-Python checks above run
    everywhere). ExecStart points at this environment's hookline so the check of the
    executable passes; every other line is the file's own."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:  # not a skip: the parse above still ran; nothing more to ask
        return
    hookline = Path(sys.executable).with_name("hookline")
    unit = tmp_path / "hookline.service"
    unit.write_text(
        (DEPLOY / "hookline.service")
        .read_text(encoding="utf-8")
        .replace("/opt/hookline/bin/hookline", str(hookline))
    )
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "hookline.service" not in done.stderr, done.stderr  # no warnings about it

"""docs/operations.md says what the code does: its metric names are the ones scraped,
its exit statuses are the ones `hookline serve` uses, its TOML decodes."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import msgspec
from prometheus_client.parser import text_string_to_metric_families

import hookline.metrics
import hookline.startup
from hookline import cli
from hookline.config import LoggingConfig, MetricsConfig
from hookline.metrics import metrics_for, watch_notifications
from hookline.runtime import Runtime
from hookline.testing.harness import make_config, scripted_plugins

DOC = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()


def test_the_metrics_documented_are_the_metrics_served():
    runtime = Runtime(make_config(), scripted_plugins([hookline.metrics]))
    watch_notifications(runtime, pending=lambda: 0, failed=lambda: 0)
    exposition = metrics_for(runtime).exposition().decode()
    served = {
        family.name
        for family in text_string_to_metric_families(exposition)
        if not family.name.endswith("_created")  # prometheus-client's start times
    }
    table = DOC[DOC.index("| metric |") :]
    table = table[: table.index("\n\n")]
    documented = set()
    for cell in re.findall(r"^\| (.+?) \|", table, flags=re.M)[1:]:
        documented |= {name.removesuffix("_total") for name in re.findall(r"`(\w+)`", cell)}
    assert documented == served


def test_the_exit_statuses_documented_are_the_ones_used():
    rows = dict(re.findall(r"^\| (\d+) \| ([^|]+) \|", DOC, flags=re.M))
    assert "refused the key" in rows[str(hookline.startup.EXIT_AUTH)]
    assert "unreachable" in rows[str(hookline.startup.EXIT_UNREACHABLE)]
    assert "cannot listen" in rows[str(hookline.startup.EXIT_ADDRESS)]
    assert "plugin" in rows[str(hookline.startup.EXIT_PLUGIN)]
    for status in rows:  # and the command's own table lists each
        assert re.search(rf"^\s+{status}\s", cli.__doc__ or "", flags=re.M), status


def test_the_toml_in_the_doc_decodes():
    blocks = re.findall(r"```toml\n(.*?)```", DOC, flags=re.S)
    sections = {"logging": LoggingConfig, "metrics": MetricsConfig}
    seen = set()
    for block in blocks:
        raw = tomllib.loads(re.sub(r"#.*", "", block))
        for name, values in raw.items():
            if name in sections:
                msgspec.convert(values, sections[name])
                seen.add(name)
    assert seen == set(sections)

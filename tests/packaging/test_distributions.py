"""Every distribution of the workspace declares what it imports, and the core carries
nothing vendor-specific: what `.ci/packaging` checks from built wheels, checked here on
the sources so a stray import fails in seconds."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTIONS = sorted(
    p.parent for p in [*ROOT.glob("*/pyproject.toml"), *ROOT.glob("*/*/pyproject.toml")]
)
# Declared without being imported, on purpose: zoneinfo's database on systems without
# one, and the pytest plugin that runs the kit's trio fixtures.
NOT_IMPORTED = {"tzdata", "pytest-trio"}
# Namespace packages, shared by several distributions: which one a subpackage is from.
NAMESPACED = {
    "google.auth": "google-auth",
    "google.oauth2": "google-auth",
    "opentelemetry.trace": "opentelemetry-api",
    "opentelemetry.util": "opentelemetry-api",
    "opentelemetry.sdk": "opentelemetry-sdk",
    "opentelemetry.exporter": "opentelemetry-exporter-otlp-proto-http",  # the one used
}
VENDOR_MODULES = {
    "twilio",
    "deepgram",
    "openai",
    "google.auth",
    "googleapiclient",
    "hookline_testkit",
}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _top(module: str) -> str:
    two = ".".join(module.split(".")[:2])
    return two if two in NAMESPACED else module.split(".")[0]


def _imports(package: Path) -> set[str]:
    found = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {_top(alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(_top(node.module))
    return found


def _package(where: Path) -> Path:
    (package,) = (p for p in where.iterdir() if (p / "__init__.py").exists())
    return package


def _project(where: Path) -> dict:
    return tomllib.loads((where / "pyproject.toml").read_text())["project"]


# The workspace's own packages are installed editable, which packages_distributions()
# does not see.
WORKSPACE = {_package(where).name: _project(where)["name"] for where in DISTRIBUTIONS}


def _distribution_of(module: str) -> str:
    if module in WORKSPACE:
        return WORKSPACE[module]
    if module in NAMESPACED:
        return NAMESPACED[module]
    dists = importlib.metadata.packages_distributions().get(module)
    assert dists, f"no installed distribution provides {module!r}"
    return dists[0].lower().replace("_", "-")


@pytest.mark.parametrize("where", DISTRIBUTIONS, ids=lambda p: p.name)
def test_declares_exactly_what_it_imports(where: Path) -> None:
    project = _project(where)
    declared = {_name(r) for r in project.get("dependencies", [])}
    for extra in project.get("optional-dependencies", {}).values():
        declared |= {_name(r) for r in extra if not _name(r).startswith("hookline-")}
    package = _package(where)
    imported = {
        _distribution_of(m)
        for m in _imports(package)
        if m not in sys.stdlib_module_names and m != package.name
    }
    assert imported == declared - NOT_IMPORTED


@pytest.mark.parametrize("where", DISTRIBUTIONS, ids=lambda p: p.name)
def test_is_licensed_typed_and_documented(where: Path) -> None:
    project = _project(where)
    assert project["license"] == "Apache-2.0"
    assert (where / "LICENSE").read_text().startswith("\n                                 Apache")
    assert (where / project["readme"]).is_file()
    assert "Framework :: Trio" in project["classifiers"]
    assert (_package(where) / "py.typed").is_file()
    if project["name"] != "hookline":
        assert any(r.startswith("hookline>=0.1,<0.2") for r in project["dependencies"])


def test_core_is_vendor_neutral_and_adds_no_pytest_plugin() -> None:
    core = ROOT / "core"
    assert not (_imports(core / "hookline") & VENDOR_MODULES)
    assert "pytest11" not in _project(core).get("entry-points", {})

"""The face plugins see: `hookline`'s curated names, and the `ProviderContext` their
factories receive instead of the Runtime (secrets, settings, paths, limiter, logger,
closing at shutdown)."""

from __future__ import annotations

import ast
import logging
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest
import trio

import hookline
from hookline import (
    MissingSecret,
    ProviderContext,
    ProviderSpec,
    Tool,
    ToolSet,
    hookimpl,
)
from hookline.config import Secrets
from hookline.context import Closer
from hookline.runtime import Runtime
from hookline.testing.harness import make_config, scripted_plugins

ROOT = Path(__file__).resolve().parents[2]
# Every plugin distribution of the workspace (the example is a third party's).
PLUGIN_PACKAGES = sorted(
    package
    for where in [*ROOT.glob("plugins/*"), *ROOT.glob("examples/*")]
    for package in where.glob("hookline_*")
    if (package / "__init__.py").exists()
)


def _core_imports(package: Path) -> list[tuple[str, str, int, str]]:
    """(module, name, line, file) of every import from the `hookline` package in `package`."""
    found = []
    for path in sorted(package.rglob("*.py")):
        where = str(path.relative_to(package.parent))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "hookline":
                        found.append((alias.name, "", node.lineno, where))
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module.split(".")[0] == "hookline":
                    for alias in node.names:
                        found.append((node.module, alias.name, node.lineno, where))
    return found


def test_every_plugin_package_is_checked() -> None:
    names = {p.name for p in PLUGIN_PACKAGES}
    assert {"hookline_calendar_google", "hookline_llm_openai", "hookline_example_tow"} <= names
    assert len(names) >= 6, names


def _private_imports(package: Path) -> list[str]:
    """Imports from the core other than `hookline`'s public names and `hookline.testing`."""
    private = []
    for module, name, line, where in _core_imports(package):
        public = module == "hookline" and name in hookline.__all__
        testing = module == "hookline.testing" or module.startswith("hookline.testing.")
        if not (public or testing):
            private.append(f"{where}:{line}: {module} {name}".strip())
    return private


@pytest.mark.parametrize("package", PLUGIN_PACKAGES, ids=lambda p: p.name)
def test_plugins_import_only_hookline_public_names(package: Path) -> None:
    private = _private_imports(package)
    assert not private, "import these from `hookline` (add them to its __all__):\n" + "\n".join(
        private
    )


def test_the_check_sees_every_kind_of_private_import(tmp_path: Path) -> None:
    package = tmp_path / "hookline_bad"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text(
        "from hookline import hookimpl, config\n"
        "from hookline.runtime import Runtime\n"
        "from hookline.testing.scripted import ScriptedLLM\n"
    )
    (package / "sub" / "deep.py").write_text(
        "import hookline.logs\ndef later():\n    from hookline.errors import ConfigError\n"
    )
    assert _private_imports(package) == [
        "hookline_bad/__init__.py:1: hookline config",
        "hookline_bad/__init__.py:2: hookline.runtime Runtime",
        "hookline_bad/sub/deep.py:1: hookline.logs",
        "hookline_bad/sub/deep.py:3: hookline.errors ConfigError",
    ]


def test_every_public_name_exists_once() -> None:
    assert len(set(hookline.__all__)) == len(hookline.__all__)
    missing = [name for name in hookline.__all__ if not hasattr(hookline, name)]
    assert not missing
    # What the factories, telephony and tools need is all here.
    for name in (
        "ProviderContext", "ProviderSpec", "ToolSet", "CallHandler", "Route", "new_call_id",
        "Seconds", "PositiveInt", "Port", "call_log", "CallLog", "ProviderUnavailable",
        "CallEvent", "CallRecord", "hookimpl", "tool",
    ):  # fmt: skip
        assert name in hookline.__all__, name
    # The Runtime is not part of what plugins see.
    assert "Runtime" not in hookline.__all__


# --------------------------------------------------------------------------- the context


class _KeyedSettings(msgspec.Struct, forbid_unknown_fields=True):
    api_key_env: str = "SHOP_API_KEY"


class _Recorder:
    """A tool set and an LLM whose factories record the context they receive and
    register closers that log into `closed`."""

    def __init__(self, *, failing_closer: bool = False) -> None:
        self.contexts: dict[str, ProviderContext] = {}
        self.closed: list[str] = []
        self.failing_closer = failing_closer

    def _closer(self, name: str) -> Closer:
        async def aclose() -> None:
            await trio.lowlevel.checkpoint()
            self.closed.append(name)
            if self.failing_closer and name == "shop:first":
                raise RuntimeError("the shop's database is gone")

        return aclose

    def _tools(self, settings: _KeyedSettings, ctx: ProviderContext) -> Sequence[Tool]:
        self.contexts["tools"] = ctx
        ctx.on_close(self._closer("shop:first"))
        ctx.on_close(self._closer("shop:second"))
        return []

    def _llm(self, settings: _KeyedSettings, ctx: ProviderContext) -> object:
        from hookline.testing.scripted import ScriptedLLM

        self.contexts["llm"] = ctx
        ctx.on_close(self._closer("llm"))
        return ScriptedLLM()

    @hookimpl
    def hookline_toolsets(self) -> list[ToolSet]:
        return [ToolSet(name="shop", settings=_KeyedSettings, create=self._tools)]

    @hookimpl
    def hookline_providers(self) -> list[ProviderSpec]:
        return [ProviderSpec("llm", "recorder", _KeyedSettings, self._llm)]


def _runtime(recorder: _Recorder, tmp_path: Path, environ: dict[str, str]) -> Runtime:
    config = make_config(
        providers={"llm": "recorder", "tools": ["builtin", "shop"]},
        llm={"recorder": {}},
        tools={"shop": {"api_key_env": "SHOP_KEY"}},
        agent={"timezone": "America/Chicago", "busy_message": "All lines are busy."},
        policy={"llm_first_token_timeout_s": 7.5},
    )
    config = msgspec.structs.replace(config, path=str(tmp_path / "agent.toml"))
    plugins = scripted_plugins([recorder])
    return Runtime(config, plugins, secrets=Secrets(environ))


def test_factories_receive_a_context_not_the_runtime(tmp_path: Path) -> None:
    recorder = _Recorder()
    runtime = _runtime(recorder, tmp_path, {"SHOP_KEY": "s3cret", "SHOP_API_KEY": "k"})
    tools, llm = recorder.contexts["tools"], recorder.contexts["llm"]
    assert isinstance(tools, ProviderContext) and not isinstance(tools, Runtime)
    assert (tools.section, llm.section) == ("tools.shop", "llm.recorder")
    assert tools.agent.timezone == "America/Chicago"
    assert llm.policy.llm_first_token_timeout_s == 7.5
    assert tools.thread_limiter is runtime.thread_limiter
    assert tools.logger is logging.getLogger("hookline.tools.shop")
    # Paths: relative to the config file's folder, absolute ones as given.
    assert tools.config_file == tmp_path / "agent.toml"
    assert tools.config_dir == tmp_path
    assert tools.resolve_path("data/shop.duckdb") == tmp_path / "data" / "shop.duckdb"
    assert tools.resolve_path("/var/shop.duckdb") == Path("/var/shop.duckdb")
    assert tools.secret("SHOP_KEY", key="api_key_env") == "s3cret"


def test_a_missing_secret_names_the_key_in_the_factorys_section(tmp_path: Path) -> None:
    recorder = _Recorder()
    _runtime(recorder, tmp_path, {"SHOP_API_KEY": "k"})
    ctx = recorder.contexts["tools"]
    with pytest.raises(MissingSecret) as caught:
        ctx.secret("SHOP_KEY", key="api_key_env")
    assert caught.value.key == "tools.shop.api_key_env"
    assert caught.value.env_var == "SHOP_KEY"
    assert str(tmp_path / "agent.toml") in str(caught.value)
    error = ctx.config_error("cannot open the database", key="database")
    assert error.key == "tools.shop.database"
    assert str(tmp_path / "agent.toml") in str(error)


async def test_aclose_runs_closers_last_registered_first_once(tmp_path: Path) -> None:
    recorder = _Recorder()
    runtime = _runtime(recorder, tmp_path, {"SHOP_KEY": "s", "SHOP_API_KEY": "k"})
    assert recorder.closed == []
    await runtime.aclose()
    # Providers are built before tool sets; shutdown closes in the reverse order.
    assert recorder.closed == ["shop:second", "shop:first", "llm"]
    await runtime.aclose()
    assert recorder.closed == ["shop:second", "shop:first", "llm"]


async def test_a_failing_closer_is_logged_and_the_others_still_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = _Recorder(failing_closer=True)
    runtime = _runtime(recorder, tmp_path, {"SHOP_KEY": "s", "SHOP_API_KEY": "k"})
    with caplog.at_level(logging.ERROR, logger="hookline.runtime"):
        await runtime.aclose()
    assert recorder.closed == ["shop:second", "shop:first", "llm"]
    assert any("the shop's database is gone" in r.exc_text for r in caplog.records if r.exc_text)


async def test_closers_run_even_when_shutdown_is_cancelled(tmp_path: Path) -> None:
    recorder = _Recorder()
    runtime = _runtime(recorder, tmp_path, {"SHOP_KEY": "s", "SHOP_API_KEY": "k"})
    with trio.CancelScope() as scope:
        scope.cancel()
        await runtime.aclose()
    assert recorder.closed == ["shop:second", "shop:first", "llm"]

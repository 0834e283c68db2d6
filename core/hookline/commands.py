"""`hookline plugins`, `hookline check`, `hookline chat`: inspecting and trying a stack."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import trio

from .config import Config, Secrets, load_config
from .errors import ConfigError, HooklineError, MissingSecret
from .plugins import Plugins, discover
from .runtime import KINDS, missing_secrets, resolve

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plugins", help="list discovered plugins and what they provide")
    p.add_argument("--verbose-errors", action="store_true", help="show tracebacks of failures")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("check", help="validate a config file without starting anything")
    p.add_argument("config")
    p.add_argument(
        "--online", action="store_true", help="also check credentials against the providers"
    )
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("chat", help="type as the caller; the configured LLM and tools answer")
    p.add_argument("config")
    p.add_argument(
        "--base-url",
        help="send the [llm.openai] requests to this OpenAI-compatible server (Ollama, vLLM); "
        "no key needed unless it is api.openai.com",
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="answer with the bundled OpenAI fake and its demo brain (needs hookline-testkit)",
    )
    p.set_defaults(offline_llm=None)  # hookline-testkit's commands set it
    p.set_defaults(func=cmd_chat)


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def cmd_plugins(args: argparse.Namespace) -> int:
    plugins = discover()
    for info in plugins.loaded:
        _out(f"{info.distribution} {info.version}  (entry point {info.name!r})")
        for spec in info.providers:
            _out(f"    provider  {spec.kind}/{spec.name}")
        for ts in info.toolsets:
            names = ", ".join(ts.tool_names) if ts.tool_names else ts.description
            _out(f"    tools     {ts.name}" + (f": {names}" if names else ""))
        for channel in info.channels:
            _out(f"    notify    {channel.name}: {channel.description}")
        for hook in info.observes:
            _out(f"    observes  {hook}")
    for failure in plugins.failed:
        _out(f"{failure.distribution} {failure.version}  (entry point {failure.name!r})")
        _out(f"    FAILED TO LOAD: {failure.error}")
        if args.verbose_errors:
            _out("    " + failure.detail.replace("\n", "\n    "))
    return 0


def _load(path: str) -> tuple[Config, Plugins]:
    config = load_config(path)
    plugins = discover()
    try:
        resolve(config, plugins)
    except ConfigError as e:
        if plugins.failed:
            broken = "; ".join(f"{f.distribution}: {f.error}" for f in plugins.failed)
            raise ConfigError(f"{e} [plugins that failed to load: {broken}]") from None
        raise
    return config, plugins


def cmd_check(args: argparse.Namespace) -> int:
    config, plugins = _load(args.config)
    resolved = resolve(config, plugins)
    for kind in KINDS:
        name = getattr(config.providers, kind)
        _out(f"{kind:10} {name:16} from {plugins.origin[(kind, name)]}")
    for name in config.providers.tools:
        _out(f"{'tools':10} {name:16} from {plugins.origin[name]}")
    for name in config.notifications:
        _out(f"{'notify':10} {name:16} from {plugins.origin[('notifications', name)]}")
    _check_prompt(config, plugins)  # a template typo is a config error here
    missing = missing_secrets(config, plugins, resolved, Secrets())
    for err in missing:
        _out(f"missing secret: {err}")
    if missing:
        return 1
    if args.online:
        trio.run(verify_online, config, plugins)
    _out(f"{args.config}: OK")
    return 0


async def verify_online(config: Config, plugins: Plugins) -> None:
    from .runtime import Runtime

    runtime = Runtime(config, plugins)
    for kind in KINDS:
        provider = getattr(runtime, kind)
        verify = getattr(provider, "verify", None)
        if verify is not None:
            await verify()
            _out(f"{kind:10} credentials accepted")
        aclose = getattr(provider, "aclose", None)
        if aclose is not None:
            await aclose()


def _check_prompt(config: Config, plugins: Plugins) -> None:
    from .prompt import check_prompt
    from .prompt_cli import preview_runtime

    try:
        runtime = preview_runtime(config, plugins)
    except MissingSecret:
        return  # a tool set needs its secrets to be built; they are listed next
    try:
        check_prompt(runtime)
    finally:
        runtime.stop()


def cmd_chat(args: argparse.Namespace) -> int:
    config, plugins = _load(args.config)
    offline = args.offline_llm if args.offline else None
    if args.offline and offline is None:
        raise ConfigError(
            "chat --offline needs the test kit: install hookline-testkit "
            "(or use --base-url with a local server such as Ollama)"
        )
    return trio.run(_chat, config, plugins, args.base_url, offline)


async def _chat(config: Config, plugins: Plugins, base_url: str | None, offline_llm: Any) -> int:
    from .chat import OFFLINE_KEY_ENV, chat_loop, use_base_url

    try:
        if offline_llm is not None:
            async with offline_llm() as url:
                use_base_url(config, url, api_key_env=OFFLINE_KEY_ENV)
                await chat_loop(config, plugins)
            return 0
        if base_url:
            use_base_url(config, base_url)
        await chat_loop(config, plugins)
    except HooklineError:
        raise
    except EOFError:
        pass
    return 0

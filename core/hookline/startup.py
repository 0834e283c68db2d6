"""Starting `hookline serve` cleanly: every way start-up can fail is one line that names
the provider or the file and the fix, with its own exit status (see hookline/cli.py).

A provider that is unreachable at boot (a 5xx, a refused connection: `retryable`) is
tried again with a bounded backoff for `[server] startup_timeout_s`, so a service
restarted together with its network, or a provider having a bad minute, still comes up.
A refused key is not retried: only the deployer can fix it.
"""

from __future__ import annotations

import logging
import socket

import trio

from .config import Config
from .errors import ConfigError, HooklineError, ProviderAuthError, ProviderError, ProviderTimeout
from .plugins import Plugins
from .retry import Backoff, retry
from .runtime import KINDS, Runtime, resolve

__all__ = [
    "EXIT_ADDRESS",
    "EXIT_AUTH",
    "EXIT_PLUGIN",
    "EXIT_UNREACHABLE",
    "StartupFailed",
    "check_bind",
    "check_plugins",
    "start_runtime",
]

log = logging.getLogger("hookline.server")

# Exit statuses of `hookline serve` (the table is in hookline/cli.py's docstring).
EXIT_AUTH = 3
EXIT_UNREACHABLE = 4
EXIT_ADDRESS = 5
EXIT_PLUGIN = 6

# Between tries of an unreachable provider at boot: 1 s, 2 s, 4 s, then every 8 s.
BOOT_BACKOFF = Backoff(first_s=1.0, max_s=8.0, jitter=0.2)


class StartupFailed(HooklineError):
    """`hookline serve` cannot start; `exit_code` is the status the command exits with."""

    def __init__(self, message: str, exit_code: int) -> None:
        self.exit_code = exit_code
        super().__init__(message)


def check_plugins(config: Config, plugins: Plugins) -> None:
    """The config resolves against the installed plugins; when it does not and a plugin
    failed to import, that import is the likely cause and the line says so."""
    for failure in plugins.failed:
        log.warning("plugin %s failed to load: %s", failure.name, failure.error)
    try:
        resolve(config, plugins)
    except ConfigError as e:
        if not plugins.failed:
            raise
        broken = "; ".join(
            f"{f.distribution} (entry point {f.name!r}) failed to import: {f.error}"
            for f in plugins.failed
        )
        raise StartupFailed(
            f"{e}: {broken} (reinstall it; `hookline plugins --verbose-errors` shows why)",
            EXIT_PLUGIN,
        ) from None


def check_bind(host: str, port: int, *, what: str, fix: str) -> None:
    """Fail early and in one line when the address is taken or not ours to use."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise StartupFailed(
                f"cannot listen on {host}:{port} ({what}): {e.strerror or e} ({fix})",
                EXIT_ADDRESS,
            ) from None


async def start_runtime(runtime: Runtime) -> None:
    """Check the providers that can check their key (`verify`, as `hookline check
    --online` does), then `runtime.start()` (the fixed phrases synthesized: the TTS
    reached; observers told), retrying an unreachable provider until `[server]
    startup_timeout_s`; StartupFailed otherwise."""
    timeout = runtime.config.server.startup_timeout_s
    deadline = trio.current_time() + timeout
    # The latest try's error: when the deadline cuts the next try short, the line still
    # says what failed (the refused URL, the status), not only that time ran out.
    last: list[ProviderError] = []

    def timed_out(kind: str) -> ProviderTimeout:
        why = f"; the last try: {last[0]}" if last else ""
        return ProviderTimeout(
            f"no answer within {timeout:.0f} s{why}", provider=_name(runtime, kind)
        )

    async def verify() -> None:
        for kind in KINDS:
            check = getattr(getattr(runtime, kind), "verify", None)
            if check is None:
                continue
            with trio.move_on_at(deadline) as scope:
                try:
                    await check()
                except ProviderError as e:
                    last[:] = [e]
                    raise
            if scope.cancelled_caught:
                raise timed_out(kind)

    async def attempt() -> None:
        with trio.move_on_at(deadline) as scope:
            try:
                await runtime.start()
            except BaseExceptionGroup as group:  # phrases are synthesized concurrently
                error = _first_provider_error(group)
                if isinstance(error, ProviderError):
                    last[:] = [error]
                raise error from None
            except ProviderError as e:
                last[:] = [e]
                raise
        if scope.cancelled_caught:
            raise timed_out("tts")

    try:
        await retry(verify, BOOT_BACKOFF, what="checking the keys", log=log, deadline=deadline)
        await retry(attempt, BOOT_BACKOFF, what="start-up", log=log, deadline=deadline)
    except ProviderAuthError as e:
        raise StartupFailed(
            f"start-up failed, {e} (fix the key in the environment and start again)", EXIT_AUTH
        ) from None
    except ProviderError as e:
        section = e.provider.replace("/", ".") if e.provider else "the provider's section"
        raise StartupFailed(
            f"start-up failed, {e} (still failing after retrying up to {timeout:.0f} s: is it "
            f"reachable from this host? check the URLs in [{section}] and the network)",
            EXIT_UNREACHABLE,
        ) from None


def _name(runtime: Runtime, kind: str) -> str:
    return f"{kind}/{runtime.provider_names[kind]}"  # "tts/deepgram", as errors say


def _first_provider_error(group: BaseExceptionGroup) -> BaseException:
    matched, rest = group.split(ProviderError)
    if matched is None or rest is not None:
        return group  # something else broke: a bug, raised whole
    first: BaseException = matched
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first

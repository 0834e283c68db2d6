"""What a provider or tool set factory receives: `create(settings, ctx)`.

The runtime builds one `ProviderContext` per factory call, naming the config section the
settings came from ("llm.openai", "tools.calendar_google"), so a missing secret or a bad
path is reported at the key the operator has to fix. It carries only what plugins use:
secrets, the agent's and the policy's settings, the config file's place on disk, the
process-wide thread limiter, a logger, and a way to release resources at shutdown.
Plugins never see the `Runtime` itself.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from .config import AgentConfig, PolicyConfig, RecordingConfig, Secrets
from .database import Database, Schema, Storage
from .errors import ConfigError
from .outbox import Outbox
from .providers import CallInfo

__all__ = ["CallContext", "Closer", "ProviderContext"]

Closer = Callable[[], Awaitable[None]]
# (call, now) -> template variables for that call's prompt, or None.
CallContext = Callable[[CallInfo, dt.datetime], Mapping[str, Any] | None]


@dataclass(frozen=True, kw_only=True)
class ProviderContext:
    """The runtime's services for one factory call.

    section: the dotted config key of the settings ("tools.calendar_google"); agent and
    policy: the `[agent]` and `[policy]` sections; config_file: the config file's path
    (None when the config did not come from a file); thread_limiter: the process-wide
    `trio.CapacityLimiter` for blocking work (`trio.to_thread.run_sync(..., limiter=)`);
    logger: "hookline.<section>"; outbox: where tools enqueue notifications (SMS, signed
    webhooks) for delivery after the fact (`await ctx.outbox.enqueue(...)`, see
    `hookline.Outbox`); without `[notifications]` configured it stores nothing;
    storage: `[storage]`, where stores keep durable rows (`ctx.database(...)`).
    """

    section: str
    agent: AgentConfig
    policy: PolicyConfig
    config_file: Path | None
    thread_limiter: trio.CapacityLimiter
    logger: logging.Logger
    secrets: Secrets = field(repr=False)
    outbox: Outbox = field(default_factory=Outbox.disabled, repr=False)
    # The runtime's list of closers, owned by the runtime (see `on_close`).
    _add_closer: Callable[[Closer], None] = field(repr=False)
    # The runtime's list of per-call prompt contributions (see `on_call_context`).
    _add_call_context: Callable[[CallContext], None] = field(repr=False)
    # `[recording]`: whether a telephony provider records calls (the caller is told in
    # the greeting by the core).
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    # `[storage]`: where stores keep their rows (see `database`).
    storage: Storage = field(default_factory=Storage, repr=False)

    @property
    def config_dir(self) -> Path:
        """The directory relative paths in the config are read from (cwd without a file)."""
        return self.config_file.parent if self.config_file else Path.cwd()

    def resolve_path(self, path: str) -> Path:
        """`path` from the config: absolute as given, relative to the config file's folder."""
        p = Path(path)
        return p if p.is_absolute() else self.config_dir / p

    def secret(self, env_var: str, *, key: str) -> str:
        """The secret in environment variable `env_var`; `key` is the settings field that
        named it ("api_key_env"). Raises MissingSecret at `<section>.<key>` when unset."""
        return self.secrets.get(env_var, key=self.key(key), file=self._file)

    def config_error(self, message: str, *, key: str | None = None) -> ConfigError:
        """A ConfigError about this section (or its field `key`), naming the config file."""
        return ConfigError(message, file=self._file, key=self.key(key) if key else self.section)

    def key(self, name: str) -> str:
        """The dotted config key of this section's field `name`."""
        return f"{self.section}.{name}"

    def database(
        self, file: str, schema: Schema, *, provider: str | None = None, held: bool = False
    ) -> Database:
        """Where a store keeps its rows, as `[storage]` chose: the DuckDB `file` (relative
        to the config file's folder), or its tables in the shared PostgreSQL database.
        `schema` is the tables' DDL (one script, or one per engine); see hookline.Database.
        `held`: keep the DuckDB file open in this process (fast, but one process only).
        """
        return self.storage.database(
            file=self.resolve_path(file),
            schema=schema,
            provider=provider or self.section,
            held=held,
        )

    def on_close(self, aclose: Closer) -> None:
        """Have `await aclose()` run once when the runtime shuts down (`Runtime.aclose`),
        after the calls ended; closers run last registered first, each on its own (one
        that fails is logged and the others still run), within a few seconds in all."""
        self._add_closer(aclose)

    def on_call_context(self, variables: CallContext) -> None:
        """Have `variables(call, now)` add template variables to every call's prompt, from
        what this provider or tool set holds (the calendar adds the shop's hours and the
        caller's upcoming appointments). The same rules as the `hookline_call_context`
        hook, which serves plugins without a factory: synchronous, no I/O, plain values;
        the core's names and earlier contributions win."""
        self._add_call_context(variables)

    @property
    def _file(self) -> str | None:
        return str(self.config_file) if self.config_file else None

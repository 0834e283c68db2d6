"""The hookline plugin contract.

A plugin is a module registered under the `hookline` entry-point group:

    [project.entry-points.hookline]
    my_plugin = "my_package"

It implements any of the hooks below as plain functions decorated with
`hookline.hookimpl`, and imports from the core only what `hookline` exports (its tests
may also use `hookline.testing`). Every hook is called synchronously on the trio thread:
keep them fast and never block (hand slow work to a thread or a trio task of your own).

Providers and tool sets are collected once at start-up. The runtime builds the chosen
ones by calling their factory, `create(settings, ctx)`: `settings` is the plugin's
decoded config section, `ctx` a `hookline.ProviderContext` (secrets, the `[agent]` and
`[policy]` sections, the config file's folder, the thread limiter, a logger, and
`on_close` for what must be released at shutdown). Factories never see the runtime.
Observers are called for every call; an observer that raises is logged and skipped, it
never breaks the call.

Observers run in pluggy's order: `@hookimpl(tryfirst=True)` ones first, then plain ones
(the last registered first), then `@hookimpl(trylast=True)` ones. The per-call observer
hooks (`hookline_call_started`, `hookline_call_event`, `hookline_call_ended`) take plain
implementations only: a `wrapper=True` or `hookwrapper=True` one is refused when the
plugin loads (`hookline plugins` lists it as failed), because each observer is called on
its own so that one failing cannot stop the others.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .events import CallEvent, CallRecord
    from .outbox import ChannelSpec
    from .providers import CallInfo, ProviderSpec
    from .runtime import Runtime
    from .tools import ToolSet

PROJECT = "hookline"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def hookline_providers() -> Sequence[ProviderSpec]:
    """Return the providers this plugin offers.

    Called once when plugins are loaded, with no arguments. Each `ProviderSpec` names a
    kind (telephony, stt, llm, tts), a name the config uses, the msgspec Struct of its
    settings and a factory. Two plugins offering the same kind and name is an error at
    start-up. All results are collected (not first-result).

    The chosen provider of each kind is built once per process, at start-up, with
    `spec.create(settings, ctx)`: `settings` decoded from `[<kind>.<name>]`, `ctx` a
    `ProviderContext` whose `section` is "<kind>.<name>". A `ConfigError` (or
    `MissingSecret`, from `ctx.secret`) raised there stops start-up with its message.
    The provider's `async def aclose()`, if it has one, and whatever it handed to
    `ctx.on_close` are awaited once at shutdown, after the last call.
    """


@hookspec
def hookline_toolsets() -> Sequence[ToolSet]:
    """Return the tool sets this plugin offers.

    Called once when plugins are loaded. A tool set is enabled when `[providers] tools`
    lists its name; its `[tools.<name>]` section is decoded with `ToolSet.settings` (None
    when it takes none) and `ToolSet.create(settings, ctx)` builds its tools once per
    process at start-up, `ctx` being a `ProviderContext` whose `section` is
    "tools.<name>". What the tools share and must release (a database connection, an
    HTTP client) is handed to `ctx.on_close` and awaited once at shutdown, after the
    last call. Tool names must be unique across enabled sets. All results are collected.
    """


@hookspec
def hookline_notification_channels() -> Sequence[ChannelSpec]:
    """Return the notification channels this plugin offers (SMS, a signed webhook, ...).

    Called once when plugins are loaded. Each `hookline.ChannelSpec` names the channel
    (what `[notifications.<name>]` configures and what tools enqueue to), the msgspec
    Struct of its settings and a factory. Two plugins offering the same name is an error
    at start-up. All results are collected (not first-result).

    A channel is on when its section is in the config (`hookline check` decodes it with
    the Struct, and lists its `*_env` secrets when unset). It is built once per process
    at start-up with `spec.create(settings, ctx)`, `ctx` a `ProviderContext` whose
    `section` is "notifications.<name>"; what it holds (an HTTP client) goes to
    `ctx.on_close`. The returned object has `async def send(notification)`: return when
    the far end accepted it, raise a `ProviderError` when not (`retryable` decides
    whether the outbox tries again later). It is called from the outbox's sender task,
    never from a call: see `hookline.outbox`.
    """


@hookspec
def hookline_runtime_started(runtime: Runtime) -> None:
    """The runtime is built and about to take calls.

    `runtime.config` is the decoded config. Observers open their sinks here (the
    analytics plugin opens DuckDB). Raising aborts start-up with the error shown.
    """


@hookspec
def hookline_runtime_stopping(runtime: Runtime) -> None:
    """The runtime is shutting down after its last call ended: flush and close sinks.

    It may block briefly (it runs after calls are drained).
    """


@hookspec
def hookline_call_started(runtime: Runtime, call: CallInfo, started: float) -> None:
    """A call was admitted and its engine is starting. `started` is wall-clock UNIX time.

    Like every hook, an implementation may take only the arguments it needs:
    `def hookline_call_started(call): ...` is fine.
    """


@hookspec
def hookline_call_event(runtime: Runtime, call: CallInfo, event: CallEvent) -> None:
    """Something happened in a call: one of the typed events in `hookline.events`.

    Called on the hot path of the call: do not block, do not do I/O here; queue.
    """


@hookspec
def hookline_call_ended(runtime: Runtime, call: CallInfo, record: CallRecord) -> None:
    """A call ended (for any reason). `record` holds its turns, usage and end reason.

    Called exactly once per call that reached `hookline_call_started`, and also for
    calls rejected before they started (end_reason "rejected:<why>").
    """


@hookspec
def hookline_call_context(
    runtime: Runtime, call: CallInfo, now: dt.datetime
) -> Mapping[str, Any] | None:
    """Template variables this plugin adds to the prompt of one call, or None.

    The `[agent]` instructions are a Jinja2 template (sandboxed, undefined names are
    errors) rendered once per call when its engine starts, before the greeting, and by
    `hookline prompt` (see `hookline.prompt`). `now` is the time the call is rendered
    for: an aware datetime, the wall clock for a real call, `--at` for `hookline prompt`;
    use it rather than reading a clock, so a preview shows what a call at that moment
    gets. `call.from_number` is the carrier's caller id ("" when withheld).

    Called synchronously on the trio thread for every call: answer from state you
    already hold (no I/O, no waiting), like `hookline_health`. Plain values only
    (str, numbers, bools, dates, lists, dicts): the template reads them, it calls
    nothing. Name your variables after what they are (`hours`, `appointments`); the
    core's own (`shop`, `now`, `today`, `weekday`, `time`, `timezone`, `caller`, `tools`)
    and a name an earlier plugin gave win over yours, with a warning in the log.

    Also called once at start-up (and by `hookline check`) with a sample call without
    caller id, so that a template naming a variable nobody provides is a config error
    before the first caller hears it. Each implementation is called on its own: one that
    raises is logged and its variables are left out of that call's prompt.
    """


@hookspec
def hookline_health(runtime: Runtime) -> str | None:
    """A problem this plugin sees with the runtime, as one short line, or None.

    Asked on every `GET /healthz`: answer from state you already hold (no I/O, no
    waiting). While any plugin reports a problem `/healthz` answers 503 with the
    problems listed, so a load balancer or orchestrator sees the process as not ready
    (the analytics plugin reports a database it cannot write). Calls in progress are
    not affected. All results are collected; one that raises counts as a problem.
    """

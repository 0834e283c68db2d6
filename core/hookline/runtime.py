"""The runtime: one per process. Resolves the config against the plugins, builds the
chosen providers and tools, caches fixed phrases, admits calls and runs each one.

Telephony plugins see it as a `CallHandler`; provider and tool set factories never see
it: each gets a `ProviderContext` (secrets, agent and policy settings, paths, the thread
limiter, a logger, `on_close`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import msgspec
import trio

from .audio import MULAW_8K
from .config import Config, Secrets, decode_section, secret_keys
from .context import CallContext, Closer, ProviderContext
from .database import Storage
from .engine.metrics import LoopLag
from .errors import ConfigError, MissingSecret, PluginError
from .events import CallEvent, CallRecord, RecordingCompleted, TelephonyStatus
from .logs import call_log
from .outbox import Outbox, OutboxStore
from .outbox.store import SCHEMA as OUTBOX_SCHEMA
from .plugins import Plugins
from .providers import (
    LLM,
    STT,
    TTS,
    CallInfo,
    CallLeg,
    Message,
    ProviderKind,
    Telephony,
    new_call_id,
)
from .retry import Backoff
from .summary import SummaryWriter
from .tools import Tool

__all__ = ["KINDS", "Handoff", "Handoffs", "Resolved", "Runtime", "new_call_id", "resolve"]

log = logging.getLogger("hookline.runtime")

KINDS: tuple[ProviderKind, ...] = ("telephony", "stt", "llm", "tts")


# A refused call's hang-up must not hold the drain.
REFUSE_HANGUP_TIMEOUT_S = 5.0


async def _set_then_cancel(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


@dataclass
class Resolved:
    """The config checked against the installed plugins: decoded settings per choice."""

    provider_settings: dict[ProviderKind, msgspec.Struct] = field(default_factory=dict)
    toolset_settings: dict[str, msgspec.Struct | None] = field(default_factory=dict)
    channel_settings: dict[str, msgspec.Struct] = field(default_factory=dict)


def resolve(config: Config, plugins: Plugins) -> Resolved:
    """Check that every chosen provider and tool set exists and decode its section."""
    file = config.path or None
    resolved = Resolved()
    for kind in KINDS:
        chosen = getattr(config.providers, kind)
        sections: dict[str, Any] = getattr(config, kind)
        for name in sections:
            if plugins.provider(kind, name) is None:
                raise ConfigError(
                    f"no {kind} provider called {name!r} is installed "
                    f"(installed: {', '.join(plugins.names(kind)) or 'none'})",
                    file=file,
                    key=f"{kind}.{name}",
                )
        spec = plugins.provider(kind, chosen)
        if spec is None:
            raise ConfigError(
                f"no {kind} provider called {chosen!r} is installed "
                f"(installed: {', '.join(plugins.names(kind)) or 'none'}; "
                f"see `hookline plugins`)",
                file=file,
                key=f"providers.{kind}",
            )
        settings = decode_section(config, f"{kind}.{chosen}", sections.get(chosen), spec.settings)
        resolved.provider_settings[kind] = settings
    for name in config.tools:
        if name not in config.providers.tools:
            raise ConfigError(
                f"section [tools.{name}] is for a tool set not listed in providers.tools",
                file=file,
                key=f"tools.{name}",
            )
    for i, name in enumerate(config.providers.tools):
        ts = plugins.toolsets.get(name)
        if ts is None:
            raise ConfigError(
                f"no tool set called {name!r} is installed "
                f"(installed: {', '.join(sorted(plugins.toolsets)) or 'none'})",
                file=file,
                key=f"providers.tools[{i}]",
            )
        raw = config.tools.get(name)
        if ts.settings is None:
            if raw:
                raise ConfigError(
                    f"tool set {name!r} takes no settings", file=file, key=f"tools.{name}"
                )
            resolved.toolset_settings[name] = None
        else:
            resolved.toolset_settings[name] = decode_section(
                config, f"tools.{name}", raw, ts.settings
            )
            if ts.check is not None:
                ts.check(resolved.toolset_settings[name], config)
    for name, raw in config.notifications.items():
        channel = plugins.channels.get(name)
        if channel is None:
            raise ConfigError(
                f"no notification channel called {name!r} is installed "
                f"(installed: {', '.join(sorted(plugins.channels)) or 'none'})",
                file=file,
                key=f"notifications.{name}",
            )
        resolved.channel_settings[name] = decode_section(
            config, f"notifications.{name}", raw, channel.settings
        )
    return resolved


def missing_secrets(
    config: Config, plugins: Plugins, resolved: Resolved, secrets: Secrets
) -> list[MissingSecret]:
    """Every `*_env` secret that the chosen providers and tools need and the env lacks."""
    out = []
    for kind, settings in resolved.provider_settings.items():
        chosen = getattr(config.providers, kind)
        for fld, env in secret_keys(settings).items():
            if secrets.optional(env) is None:
                out.append(MissingSecret(env, key=f"{kind}.{chosen}.{fld}", file=config.path))
    for name, settings in resolved.toolset_settings.items():
        if settings is not None:
            for fld, env in secret_keys(settings).items():
                if secrets.optional(env) is None:
                    out.append(MissingSecret(env, key=f"tools.{name}.{fld}", file=config.path))
    for name, settings in resolved.channel_settings.items():
        for fld, env in secret_keys(settings).items():
            if secrets.optional(env) is None:
                out.append(MissingSecret(env, key=f"notifications.{name}.{fld}", file=config.path))
    storage = config.storage
    if storage.backend == "postgresql" and secrets.optional(storage.url_variable) is None:
        key = "storage.url_variable"
        out.append(MissingSecret(storage.url_variable, key=key, file=config.path))
    analytics = config.analytics
    if analytics.enabled and analytics.caller_numbers == "hashed":
        if secrets.optional(analytics.hash_salt_env) is None:
            key = "analytics.hash_salt_env"
            out.append(MissingSecret(analytics.hash_salt_env, key=key, file=config.path))
    return out


# How long the conversation of a transferred call waits for the caller to come back
# (the transfer rang nobody): the ring time plus Twilio's callback, with room to spare.
HANDOFF_WINDOW_S = 600.0
HANDOFF_MEMORY = 1000  # transferred calls remembered at once (a bounded few minutes' worth)


@dataclass
class Handoff:
    """The conversation of a call that ended `transferred`, for the caller's return.

    A transfer redirects the phone call away from its media stream, so that call session
    ends; if nobody takes the transfer, telephony streams the same phone call (the same
    provider call id) back, and that new session starts from this history, told the
    outcome, instead of greeting the caller as a stranger.
    """

    info: CallInfo
    history: list[Message]
    expires: float
    outcome: str = ""  # from telephony: "no-answer", "busy", "failed", "answered"...
    number: str = ""

    def note(self, offers_message: bool) -> Message:
        """What the model is told when the caller is back (a system message)."""
        who = f"the transfer to {self.number}" if self.number else "the transfer to a person"
        outcome = self.outcome.replace("-", " ") or "not completed"
        offer = (
            "offer to take a message (take_message) so someone calls them back"
            if offers_message
            else "offer to help another way"
        )
        return Message(
            role="system",
            content=(
                f"Nobody answered: {who} ended with '{outcome}'. The caller is back on the "
                f"line with you now. Say so in one short sentence and {offer}."
            ),
        )


class Handoffs:
    """Handoffs by provider call id, each for `window_s` seconds; at most `max_entries`."""

    def __init__(self, window_s: float = HANDOFF_WINDOW_S, max_entries: int = HANDOFF_MEMORY):
        self.window_s = window_s
        self.max_entries = max_entries
        self._by_call: OrderedDict[str, Handoff] = OrderedDict()

    def keep(self, info: CallInfo, history: list[Message]) -> None:
        """Remember `history` (the live list: what the ending call still adds, such as
        the transfer tool's result, is part of it) until the caller may be back."""
        if not info.provider_call_id:
            return
        expires = trio.current_time() + self.window_s
        self._by_call.pop(info.provider_call_id, None)
        self._by_call[info.provider_call_id] = Handoff(info, history, expires)
        while len(self._by_call) > self.max_entries:
            self._by_call.popitem(last=False)

    def get(self, provider_call_id: str) -> Handoff | None:
        handoff = self._by_call.get(provider_call_id)
        if handoff is not None and trio.current_time() > handoff.expires:
            del self._by_call[provider_call_id]
            return None
        return handoff

    def take(self, provider_call_id: str) -> Handoff | None:
        handoff = self.get(provider_call_id)
        self._by_call.pop(provider_call_id, None)
        return handoff

    def __len__(self) -> int:
        return len(self._by_call)


def build_storage(
    config: Config, secrets: Secrets | None = None, limiter: trio.CapacityLimiter | None = None
) -> Storage:
    """`[storage]`: DuckDB files (no setup), or PostgreSQL at the URL in the environment
    (a missing variable: MissingSecret naming `storage.url_variable`). The CLIs build
    theirs here too, so they read where the server writes; close it after use."""
    secrets = secrets or Secrets()
    settings = config.storage
    if settings.backend == "duckdb":
        return Storage("duckdb", limiter=limiter)
    url = secrets.get(settings.url_variable, key="storage.url_variable", file=config.path or None)
    return Storage(
        "postgresql",
        url=url,
        pool_size=settings.pool_size,
        connect_timeout_s=settings.connect_timeout_s,
        limiter=limiter,
    )


def build_outbox(config: Config, storage: Storage) -> Outbox:
    """The outbox `[outbox]` describes (no store, and so nothing kept, without channels),
    its rows where `[storage]` keeps them."""
    settings = config.outbox
    if not config.notifications:
        return Outbox.disabled()
    return Outbox(
        outbox_store(config, storage),
        backoff=Backoff(
            first_s=settings.first_retry_s,
            max_s=settings.max_retry_s,
            attempts=settings.max_attempts,
            jitter=0.2,
        ),
        send_timeout_s=settings.send_timeout_s,
        poll_s=settings.poll_s,
        concurrency=settings.concurrency,
    )


def outbox_store(config: Config, storage: Storage) -> OutboxStore:
    """The outbox's rows: `outbox.duckdb` (or `[outbox] database`), or in PostgreSQL."""
    return OutboxStore(
        storage.database(file=config.outbox_database, schema=OUTBOX_SCHEMA, provider="outbox")
    )


class Runtime:
    """Builds providers and tools from a config and runs calls. Use `await runtime.start()`
    once inside trio before taking calls, and `runtime.stop()` after the last one."""

    def __init__(
        self,
        config: Config,
        plugins: Plugins,
        *,
        secrets: Secrets | None = None,
        providers: Mapping[ProviderKind, Any] | None = None,
    ) -> None:
        self.config = config
        self.plugins = plugins
        # Set in each process of `hookline serve --workers N` (its index): other
        # processes serve the same config, and this one's analytics file has only its calls.
        self.worker_index: int | None = None
        self.secrets = secrets or Secrets()
        self.thread_limiter = trio.CapacityLimiter(16)
        self.resolved = resolve(config, plugins)
        # What factories asked to have closed at shutdown (`ProviderContext.on_close`).
        self._closers: list[Closer] = []
        self.call_contexts: list[CallContext] = []  # see ProviderContext.on_call_context
        # Where operational state lives (`[storage]`): every store's Database comes from it.
        self.storage = build_storage(config, self.secrets, self.thread_limiter)
        # Built first: every factory's context carries it. Its sender runs in the server's
        # nursery (`Outbox.run`), for as long as the server does.
        self.outbox = build_outbox(config, self.storage)
        for name, settings in self.resolved.channel_settings.items():
            channel_spec = plugins.channels[name]
            ctx = self.context(f"notifications.{name}")
            self.outbox.add_channel(name, channel_spec.create(settings, ctx))
        built: dict[ProviderKind, Any] = dict(providers or {})
        for kind in KINDS:
            if kind not in built:
                chosen = getattr(config.providers, kind)
                spec = plugins.provider(kind, chosen)
                assert spec is not None  # resolve() checked
                ctx = self.context(f"{kind}.{chosen}")
                built[kind] = spec.create(self.resolved.provider_settings[kind], ctx)
        self.telephony: Telephony = built["telephony"]
        self.stt: STT = built["stt"]
        self.llm: LLM = built["llm"]
        self.tts: TTS = built["tts"]
        self.provider_names = {k: getattr(config.providers, k) for k in KINDS}
        self.tools: dict[str, Tool] = {}
        for name, settings in self.resolved.toolset_settings.items():
            for t in plugins.toolsets[name].create(settings, self.context(f"tools.{name}")):
                if t.name in self.tools:
                    raise PluginError(f"tool {t.name!r} is offered by two enabled tool sets")
                self.tools[t.name] = t
        # Audio of the configured phrases, synthesized once at start-up. Only the phrases
        # the config names live here (read-only for everyone else), so the cache is bounded
        # by the config; words a model writes are synthesized per call and not kept.
        self._phrases: dict[str, bytes] = {}
        self.phrases: Mapping[str, bytes] = MappingProxyType(self._phrases)
        self.active_calls = 0
        # Requests refused before anything they claim could be trusted (bad signature,
        # replay, bad stream token), by reason: counted for health, never recorded.
        self.refused: Counter[str] = Counter()
        self.draining = False
        self._call_scopes: set[trio.CancelScope] = set()
        self.sessions: set[Any] = set()  # live CallSessions
        self._by_provider_id: dict[str, CallInfo] = {}  # for telephony status callbacks
        self.handoffs = Handoffs()  # transferred calls' conversations (see Handoff)
        self._idle = trio.Event()
        self._idle.set()
        self._drain_now = trio.Event()  # set by end_calls_now(): the grace is over
        # When the trio thread ran late, so turns book that lag as runtime overhead and
        # not as provider latency (engine/metrics.py); `hookline serve` runs its probe.
        self.loop_lag = LoopLag(busy=lambda: self.active_calls > 0)
        # Post-call summaries, run by `run_background` (hookline serve starts it).
        self.summaries: SummaryWriter | None = (
            SummaryWriter(self, config.summary) if config.summary.enabled else None
        )

    # ----------------------------------------------------------------- set-up

    def secret(self, env_var: str, *, key: str | None = None) -> str:
        """A secret from the environment; MissingSecret (naming `key`) when unset."""
        return self.secrets.get(env_var, key=key, file=self.config.path or None)

    def context(self, section: str) -> ProviderContext:
        """What the factory of the provider or tool set configured at `section` receives."""
        return ProviderContext(
            section=section,
            agent=self.config.agent,
            policy=self.config.policy,
            config_file=Path(self.config.path) if self.config.path else None,
            thread_limiter=self.thread_limiter,
            logger=logging.getLogger(f"hookline.{section}"),
            secrets=self.secrets,
            _add_closer=self._closers.append,
            _add_call_context=self.call_contexts.append,
            recording=self.config.recording,
            outbox=self.outbox,
            storage=self.storage,
        )

    async def start(self) -> None:
        """Let the providers build their clients (`prepare()`), synthesize the fixed
        phrases once and tell observers the runtime is up."""
        await self.prepare_providers()
        await self.cache_phrases()
        self.plugins.pm.hook.hookline_runtime_started(runtime=self)

    async def prepare_providers(self) -> None:
        """Await each provider's optional `prepare()`: what a provider builds once per
        process (an HTTP client, a TLS context) is built now, not by the first call's
        response while every other call in flight waits on the trio thread."""
        for kind in KINDS:
            prepare = getattr(getattr(self, kind), "prepare", None)
            if prepare is not None:
                await prepare()

    def configured_phrases(self) -> set[str]:
        """Every fixed phrase the config names: the whole content of the phrase cache."""
        agent = self.config.agent
        texts = {
            agent.greeting, agent.goodbye, agent.reprompt, agent.apology,
            agent.fallback_line, agent.transfer_announcement, *agent.fillers,
        }  # fmt: skip
        return {t for t in texts if t}

    async def cache_phrases(self) -> None:
        missing = [t for t in self.configured_phrases() if t not in self._phrases]

        async def one(text: str) -> None:
            self._phrases[text] = await self.tts.synthesize(text, MULAW_8K)

        async with trio.open_nursery() as nursery:
            for text in missing:
                nursery.start_soon(one, text)
        log.info("cached %d phrases", len(missing))

    async def run_background(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The runtime's work that outlives calls (post-call summaries), until
        `finish_background()`: start it in a nursery before taking calls."""
        if self.summaries is None:
            task_status.started()
            return
        await self.summaries.run(task_status=task_status)

    async def finish_background(self, grace_s: float | None = None) -> None:
        """After the last call: let the queued summaries finish (each is bounded by
        `[summary] timeout_s`), then stop `run_background`. Past `grace_s` (default
        twice the timeout) they are cut short and stored as skipped."""
        if self.summaries is None:
            return
        self.summaries.close()
        with trio.move_on_after(grace_s or 2 * self.config.summary.timeout_s):
            await self.summaries.idle.wait()

    def stop(self) -> None:
        """Tell observers to flush and close (after the last call ended)."""
        self._observe("hookline_runtime_stopping")

    async def aclose(self) -> None:
        """Run what factories registered with `ProviderContext.on_close` (last first),
        close what providers hold for the whole process (their `aclose`: HTTP clients),
        then `stop()`. Each is closed on its own: one that fails is logged, the others
        still run; all of it within a few seconds, even while being cancelled."""
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + 5
            while self._closers:
                closer = self._closers.pop()
                try:
                    await closer()
                except Exception:
                    log.exception("closing %r failed", closer)
            for kind in KINDS:
                aclose = getattr(getattr(self, kind), "aclose", None)
                if aclose is None:
                    continue
                try:
                    await aclose()
                except Exception:
                    log.exception("closing the %s provider failed", kind)
            try:  # after every store's last use
                await self.storage.aclose()
            except Exception:
                log.exception("closing the storage (%s) failed", self.storage.describe())
        self.stop()

    # ----------------------------------------------------------------- calls

    def try_admit(self) -> bool:
        if self.draining or self.active_calls >= self.config.server.max_concurrent_calls:
            return False
        self.active_calls += 1
        self._idle = trio.Event() if self.active_calls == 1 else self._idle
        return True

    def release(self) -> None:
        self.active_calls -= 1
        if self.active_calls == 0:
            self._idle.set()

    async def run_call(self, leg: CallLeg) -> CallRecord:
        """Run one admitted call to its end (the slot is released here).

        A stream that arrives while the server drains (its webhook was answered before
        the drain began) is refused, not greeted: it would only be cut off later."""
        from .engine.call import CallSession

        if self.draining:
            try:
                return await self._refuse_draining(leg)
            finally:
                self.release()
        # No checkpoint from here to `session.run()` registering the session: a drain
        # that starts meanwhile sees it and asks it for a goodbye.
        self._by_provider_id[leg.info.provider_call_id] = leg.info
        try:
            resumed = self.handoffs.take(leg.info.provider_call_id)
            session = CallSession(self, leg, resumed)
            with trio.CancelScope() as scope:
                self._call_scopes.add(scope)
                try:
                    return await session.run()
                finally:
                    self._call_scopes.discard(scope)
        finally:
            # A caller back from a transfer may already be on a new leg of this id.
            if self._by_provider_id.get(leg.info.provider_call_id) is leg.info:
                del self._by_provider_id[leg.info.provider_call_id]
            self.release()

    async def _refuse_draining(self, leg: CallLeg) -> CallRecord:
        clog = call_log(log, leg.info.call_id)
        clog.info("media stream arrived while draining: refused and hung up")
        record = self.record_rejected(leg.info, "draining")
        # Hang up, so the caller is not left in silence after the stream closes.
        with trio.move_on_after(REFUSE_HANGUP_TIMEOUT_S) as scope:
            try:
                await leg.hangup()
            except Exception as e:
                clog.warning("hanging up the refused call failed: %s", e)
        if scope.cancelled_caught:
            clog.warning("hanging up the refused call took over %.0f s", REFUSE_HANGUP_TIMEOUT_S)
        return record

    def record_rejected(self, info: CallInfo, reason: str) -> CallRecord:
        """A call refused before it started (busy, draining): an authenticated call, so a row."""
        now = time.time()
        record = CallRecord(
            call_id=info.call_id,
            provider_call_id=info.provider_call_id,
            from_number=info.from_number,
            to_number=info.to_number,
            started=now,
            ended=now,
            end_reason=f"rejected:{reason}",
            providers=dict(self.provider_names),
        )
        self.call_ended(info, record)
        return record

    def count_refused(self, reason: str) -> None:
        """An unauthenticated or replayed request: counted, nothing it claims is stored
        (an attacker could otherwise write rows and inflate the daily figures)."""
        self.refused[reason] += 1

    def record_status(self, provider_call_id: str, fields: Mapping[str, str]) -> None:
        """A status callback, on the live call with that id, else on the call that was
        transferred from it. Fields `transfer_outcome` (and `transfer_number`) tell the
        transfer's outcome to the conversation the caller may come back to."""
        handoff = self.handoffs.get(provider_call_id)
        info = self._by_provider_id.get(provider_call_id)
        if info is None and handoff is not None:
            info = handoff.info
        if handoff is not None and fields.get("transfer_outcome"):
            handoff.outcome = fields["transfer_outcome"]
            handoff.number = fields.get("transfer_number", "")
        info = info or CallInfo(call_id="", provider_call_id=provider_call_id)
        self.notify(info, TelephonyStatus(t=trio.current_time(), fields=dict(fields)))
        if handoff is not None and fields.get("transfer_outcome") == "answered":
            self.handoffs.take(provider_call_id)  # a person has the caller: no return

    def record_recording(
        self,
        provider_call_id: str,
        *,
        recording_sid: str,
        status: str,
        duration_s: float | None = None,
        url: str = "",
    ) -> None:
        """A recording of the call with this provider id is ready (or failed): observers
        store it against the call, even when the call has ended."""
        info = self._by_provider_id.get(provider_call_id) or CallInfo(
            call_id="", provider_call_id=provider_call_id
        )
        event = RecordingCompleted(
            t=trio.current_time(), recording_sid=recording_sid, status=status,
            duration_s=duration_s, url=url,
        )  # fmt: skip
        self.notify(info, event)

    async def drain(self, grace_s: float) -> None:
        """Stop admitting; give active calls `grace_s` seconds (or until `end_calls_now`),
        then end them gracefully: a goodbye, a hang-up, a record for every call."""
        self.draining = True
        with trio.move_on_after(grace_s):
            await self._idle_or(self._drain_now)
        for session in list(self.sessions):
            session.request_shutdown()
        with trio.move_on_after(self.config.policy.apology_timeout_s + 2):
            await self._idle.wait()
        for scope in list(self._call_scopes):
            scope.cancel()
        # Slots reserved by telephony for calls that never started expire on their own;
        # do not let them hold the shutdown.
        with trio.move_on_after(5):
            await self._idle.wait()

    def end_calls_now(self) -> None:
        """Cut the drain's grace short: active calls get their goodbye now."""
        self._drain_now.set()

    @property
    def drain_cut_short(self) -> bool:
        return self._drain_now.is_set()

    async def _idle_or(self, event: trio.Event) -> None:
        async with trio.open_nursery() as nursery:
            for waited in (self._idle, event):
                nursery.start_soon(_set_then_cancel, waited, nursery.cancel_scope)

    # ----------------------------------------------------------------- observers

    def health_problems(self) -> list[str]:
        """What plugins report wrong (the `hookline_health` hook); empty when healthy."""
        problems = []
        for plugin, results in self._call_each("hookline_health", runtime=self):
            if results is None:
                problems.append(f"the health check of {plugin} failed")
            else:
                problems.extend(str(problem) for problem in results if problem)
        return problems

    def call_started(self, info: CallInfo, started: float) -> None:
        self._observe("hookline_call_started", call=info, started=started)

    def notify(self, info: CallInfo, event: CallEvent) -> None:
        self._observe("hookline_call_event", call=info, event=event)

    def call_ended(self, info: CallInfo, record: CallRecord) -> None:
        self._observe("hookline_call_ended", call=info, record=record)
        if self.summaries is not None:
            self.summaries.submit(info, record)

    def _observe(self, hook: str, **kwargs: Any) -> None:
        self._call_each(hook, runtime=self, **kwargs)

    def _call_each(self, hook: str, **kwargs: Any) -> list[tuple[str, list[Any] | None]]:
        """Each implementation's results, by plugin name (None where it raised).

        pluggy itself calls a hook's implementations in the reverse of `get_hookimpls()`
        (tryfirst first, trylast last, otherwise last registered first). We walk them in
        that order and hand each one alone to the hook's own executor, so pluggy still
        matches arguments (an observer takes any subset, defaults allowed) and its
        tracing/monitoring still sees the call, while an implementation that raises is
        logged here and cannot stop the ones after it. Wrappers would wrap one
        implementation at a time this way, so `Plugins.add` refuses them on these hooks.
        """
        caller = getattr(self.plugins.pm.hook, hook)
        out: list[tuple[str, list[Any] | None]] = []
        for impl in reversed(caller.get_hookimpls()):
            try:
                out.append((impl.plugin_name, caller._hookexec(hook, [impl], kwargs, False)))
            except Exception:
                log.exception("%s.%s failed", impl.plugin_name, hook)
                out.append((impl.plugin_name, None))
        return out

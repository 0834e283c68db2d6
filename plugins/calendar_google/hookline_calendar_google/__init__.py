"""Service-shop scheduling tools for hookline, on Google Calendar or a local DuckDB file.

Enable with `[providers] tools = ["calendar_google", ...]` and configure the shop in
`[tools.calendar_google]` (see `CalendarSettings`).
"""

from __future__ import annotations

import datetime as dt
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from hookline import ConfigError, ToolSet, hookimpl
from hookline.tools import Tool

from .context import RememberingStore, call_context
from .schedule import Rules
from .settings import CalendarSettings
from .tools import Scheduler, build_tools

if TYPE_CHECKING:
    from hookline.providers import CallInfo
    from hookline.runtime import Runtime

__all__ = [
    "CalendarSettings",
    "create_scheduler",
    "hookline_call_context",
    "hookline_runtime_started",
    "hookline_runtime_stopping",
    "hookline_toolsets",
]

TOOL_NAMES = (
    "check_availability",
    "book_appointment",
    "find_appointments",
    "reschedule_appointment",
    "cancel_appointment",
)


def create_scheduler(
    settings: CalendarSettings,
    *,
    default_timezone: str,
    limiter: trio.CapacityLimiter,
    secret: Callable[[str, str], str],
    resolve_path: Callable[[str], Path],
    clock: Callable[[], dt.datetime] | None = None,
) -> Scheduler:
    """The scheduler and its store, from settings and what the runtime provides.
    `secret(env_var, settings_key)` reads a secret; `resolve_path` places the local file."""
    rules = Rules.from_settings(settings, default_timezone)
    if settings.backend == "local":
        from .local_store import LocalStore

        store = LocalStore(resolve_path(settings.database), limiter, bays=rules.bays)
    else:
        from .google_calendar import GoogleCalendarStore, make_credentials

        store = GoogleCalendarStore(settings, make_credentials(settings, secret), rules.tz, limiter)
    return Scheduler(
        rules,
        store,
        calendar_id=settings.calendar_id,
        max_slots=settings.max_slots,
        spacing=dt.timedelta(minutes=settings.offer_spacing_minutes),
        clock=clock,
        lookup_by_code=settings.other_number_lookup == "confirmation_code",
    )


# The stores each runtime built, closed when it stops (the DuckDB file is flushed).
_stores: weakref.WeakKeyDictionary[Runtime, list[Scheduler]] = weakref.WeakKeyDictionary()


def _create(settings: CalendarSettings, runtime: Runtime) -> Sequence[Tool]:
    scheduler = create_scheduler(
        settings,
        default_timezone=runtime.config.agent.timezone,
        limiter=runtime.thread_limiter,
        secret=lambda env, key: runtime.secret(env, key=f"tools.calendar_google.{key}"),
        resolve_path=runtime.config.resolve_path,
    )
    # Remembers the bookings it passes, for the prompt's upcoming appointments.
    scheduler.store = RememberingStore(scheduler.store)
    _stores.setdefault(runtime, []).append(scheduler)
    return build_tools(scheduler)


@hookimpl
def hookline_toolsets() -> list[ToolSet]:
    return [
        ToolSet(
            name="calendar_google",
            settings=CalendarSettings,
            create=_create,
            description="Book, find, move and cancel service appointments "
            "(Google Calendar or a local DuckDB file).",
            tool_names=TOOL_NAMES,
        )
    ]


@hookimpl
def hookline_runtime_started(runtime: Runtime) -> None:
    """Open the DuckDB file / load Google's API description before the first call, so a
    bad database path stops start-up with a clear error instead of failing a caller."""
    import duckdb

    for scheduler in _stores.get(runtime, []):
        try:
            scheduler.store.warm()
        except (duckdb.Error, OSError) as e:
            raise ConfigError(
                f"cannot open the calendar database: {e}",
                file=runtime.config.path or None,
                key="tools.calendar_google.database",
            ) from None


@hookimpl
def hookline_call_context(
    runtime: Runtime, call: CallInfo, now: dt.datetime
) -> dict[str, Any] | None:
    """The shop's hours, closures, services, open now / next opening, and the caller's
    upcoming appointments (looked up by the number the call comes from only)."""
    schedulers = _stores.get(runtime)
    if not schedulers:
        return None
    scheduler = schedulers[0]
    store = scheduler.store
    remembered = store if isinstance(store, RememberingStore) else None
    return call_context(scheduler.rules, now, call.from_number, remembered)


@hookimpl
def hookline_runtime_stopping(runtime: Runtime) -> None:
    for scheduler in _stores.pop(runtime, []):
        scheduler.store.close()

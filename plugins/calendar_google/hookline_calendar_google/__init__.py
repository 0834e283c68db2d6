"""Service-shop scheduling tools for hookline, on Google Calendar or local storage (a
DuckDB file, or the shared PostgreSQL database with `[storage] backend = "postgresql"`).

Enable with `[providers] tools = ["calendar_google", ...]` and configure the shop in
`[tools.calendar_google]` (see `CalendarSettings`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from hookline import Database, ProviderContext, ProviderUnavailable, Tool, ToolSet, hookimpl

from .context import RememberingStore, call_context
from .local_store import PROVIDER
from .notify import Confirmations
from .schedule import Rules
from .settings import CalendarSettings
from .tools import Scheduler, build_tools

__all__ = ["CalendarSettings", "create_scheduler", "hookline_toolsets"]

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
    database: Callable[[str, str], Database] | None = None,
) -> Scheduler:
    """The scheduler and its store, from settings and what the runtime provides.
    `secret(env_var, settings_key)` reads a secret; `database(file, schema)` gives the
    local backend its `hookline.Database` (`ctx.database`; without it, the DuckDB file
    `resolve_path(settings.database)`)."""
    rules = Rules.from_settings(settings, default_timezone)
    if settings.backend == "local":
        from .local_store import SCHEMA, LocalStore

        if database is None:
            store = LocalStore(resolve_path(settings.database), limiter, bays=rules.bays)
        else:
            store = LocalStore(database(settings.database, SCHEMA), bays=rules.bays)
    else:
        from .google_calendar import GoogleCalendarStore, make_credentials

        credentials = make_credentials(settings, secret, resolve_path)
        store = GoogleCalendarStore(settings, credentials, rules.tz, limiter)
    return Scheduler(
        rules,
        store,
        calendar_id=settings.calendar_id,
        max_slots=settings.max_slots,
        spacing=dt.timedelta(minutes=settings.offer_spacing_minutes),
        clock=clock,
        lookup_by_code=settings.other_number_lookup == "confirmation_code",
    )


def _create(settings: CalendarSettings, ctx: ProviderContext) -> Sequence[Tool]:
    scheduler = create_scheduler(
        settings,
        default_timezone=ctx.agent.timezone,
        limiter=ctx.thread_limiter,
        secret=lambda env, key: ctx.secret(env, key=key),
        resolve_path=ctx.resolve_path,
        database=lambda file, schema: ctx.database(file, schema, provider=PROVIDER, held=True),
    )
    # Remembers the bookings it passes, for the prompt's upcoming appointments.
    remembering = RememberingStore(scheduler.store)
    scheduler.store = remembering
    # Create the appointments table / load Google's API description now, at start-up, so
    # a bad database path or an unreachable database stops the runtime with a clear
    # error instead of failing a caller.
    try:
        scheduler.store.warm()
    except (ProviderUnavailable, OSError) as e:
        raise ctx.config_error(f"cannot open the calendar database: {e}", key="database") from None
    # Closed at shutdown, after the last call.
    ctx.on_close(scheduler.store.aclose)
    # Each call's prompt: hours, closures, services, open now / next opening, and the
    # caller's upcoming appointments (by the number the call comes from only).
    ctx.on_call_context(
        lambda call, now: call_context(scheduler.rules, now, call.from_number, remembering)
    )
    scheduler.confirmations = Confirmations(
        ctx.outbox,
        channel=settings.sms_channel,
        templates={
            "booked": settings.sms_booked,
            "rescheduled": settings.sms_rescheduled,
            "cancelled": settings.sms_cancelled,
        },
        shop=ctx.agent.name,
        shop_phone=ctx.agent.phone or "",
        tz=scheduler.rules.tz,
    )
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

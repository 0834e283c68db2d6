"""What the calendar adds to each call's prompt (`hookline_call_context`).

From the shop's rules, for the moment the call is rendered at: the hours, the closures
still ahead, the services with their durations, the booking window, whether the shop is
open now and when it next opens (closures and daylight-saving changes included: the
rules' own wall-clock arithmetic, the same the tools book with). And the caller's own
upcoming appointments, so a returning caller is greeted knowing them.

The hook may do no I/O, so appointments come from `RememberingStore`: the store the tools
use, wrapped so that it remembers every booking it reads or writes, loaded once with the
upcoming bookings when the runtime starts. It answers from this process's view: a booking
another process or a person made after start-up shows up once a tool reads it; the prompt
tells the model to confirm with find_appointments before moving or cancelling anything.
Only the number the call comes from is looked up (the lookup-own-number rule).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import msgspec

from hookline import spoken_clock

from .schedule import (
    UTC,
    Booking,
    Rules,
    _close,
    _wall,
    bookable_range,
    candidate_starts,
    normalize_phone,
    spoken,
)
from .store import Store

__all__ = ["RememberingStore", "call_context", "hours_summary", "next_opening"]

log = logging.getLogger("hookline.tools.calendar_google")

DAY_NAMES = tuple(dt.date(2024, 1, d).strftime("%A") for d in range(1, 8))  # Monday first
MAX_APPOINTMENTS = 5  # in the prompt; find_appointments lists them all
SEARCH_DAYS = 400  # a shop closed longer than a year has no next opening to tell


def call_context(
    rules: Rules,
    now: dt.datetime,
    caller: str,
    remembered: RememberingStore | None,
) -> dict[str, Any]:
    """The template variables for one call at `now` (aware) from `caller` (raw caller id)."""
    local = now.astimezone(rules.tz)
    today = local.date()
    is_open, closes, opens = opening_state(rules, now)
    earliest, latest = bookable_range(rules, now)
    shortest = min(rules.services.values())
    first = next(candidate_starts(rules, shortest, earliest, latest), None)
    number = normalize_phone(caller)
    appointments: list[dict[str, str]] = []
    if number and remembered is not None:
        for b in remembered.upcoming(number, now)[:MAX_APPOINTMENTS]:
            appointments.append(
                {
                    "service": b.service,
                    "start": b.start.astimezone(rules.tz).isoformat(timespec="minutes"),
                    "spoken": spoken(b.start, rules.tz, now),
                    "customer_name": b.customer_name,
                    "vehicle": b.vehicle,
                }
            )
    return {
        "hours": hours_summary(rules),
        "hours_spoken": hours_spoken(rules),
        "closures": [
            {"date": d.isoformat(), "spoken": f"{d:%A}, {d:%B} {d.day}, {d.year}"}
            for d in sorted(rules.closures)
            if d >= today
        ],
        "services": [
            {"name": name, "minutes": minutes, "duration": _duration(minutes)}
            for name, minutes in rules.services.items()
        ],
        "open_now": is_open,
        "closes_at": spoken(closes, rules.tz, now) if closes else "",
        "next_open": spoken(opens, rules.tz, now) if opens else "",
        "booking": {
            "min_lead_minutes": int(rules.lead.total_seconds() // 60),
            "max_days_ahead": rules.max_days_ahead,
            "earliest": spoken(first[0], rules.tz, now) if first else "",
            "latest_date": (latest.astimezone(rules.tz) - dt.timedelta(days=1)).date().isoformat(),
        },
        "appointments": appointments,
    }


def opening_state(
    rules: Rules, now: dt.datetime
) -> tuple[bool, dt.datetime | None, dt.datetime | None]:
    """(open now, when it closes if open, when it next opens if closed)."""
    day = now.astimezone(rules.tz).date() - dt.timedelta(days=1)  # a span past midnight
    for _ in range(SEARCH_DAYS):
        if day not in rules.closures:
            for open_t, close_t in rules.hours.get(day.weekday(), ()):
                # An opening time inside a spring-forward gap opens at the gap's end.
                opens = _wall(day, open_t, rules.tz) or _close(day, open_t, rules.tz)
                closes = _close(day, close_t, rules.tz)
                if opens <= now < closes:
                    return True, closes, None
                if opens > now:
                    return False, None, opens
        day += dt.timedelta(days=1)
    return False, None, None


def next_opening(rules: Rules, now: dt.datetime) -> dt.datetime | None:
    """The next time the shop opens after `now` (None when open now or never)."""
    return opening_state(rules, now)[2]


def hours_summary(rules: Rules) -> list[dict[str, str]]:
    """Weekdays with the same hours grouped: [{"days": "Monday to Friday",
    "hours": "7:30 AM to 6 PM"}, ..., {"days": "Sunday", "hours": "closed"}]."""
    groups: list[tuple[list[int], str]] = []
    for weekday in range(7):
        spans = rules.hours.get(weekday, [])
        text = " and ".join(f"{_clock(a)} to {_clock(b)}" for a, b in spans) or "closed"
        if groups and groups[-1][1] == text and groups[-1][0][-1] == weekday - 1:
            groups[-1][0].append(weekday)
        else:
            groups.append(([weekday], text))
    out = []
    for days, text in groups:
        first, last = DAY_NAMES[days[0]], DAY_NAMES[days[-1]]
        name = first if len(days) == 1 else f"{first} {'and' if len(days) == 2 else 'to'} {last}"
        out.append({"days": name, "hours": text})
    return out


def hours_spoken(rules: Rules) -> str:
    """'Monday to Friday 7:30 AM to 6 PM; Saturday 8 AM to 1 PM; Sunday closed'."""
    return "; ".join(f"{g['days']} {g['hours']}" for g in hours_summary(rules))


def _clock(t: dt.time) -> str:
    return "midnight" if t == dt.time.max else spoken_clock(t)


def _duration(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    parts = []
    if hours:
        parts.append(f"{hours} hour{'s' if hours > 1 else ''}")
    if rest:
        parts.append(f"{rest} minutes")
    return " ".join(parts)


# ------------------------------------------------------------------ remembered bookings


class RememberingStore:
    """A `Store` that remembers the bookings passing through it, by id, so the prompt
    can list a caller's upcoming appointments without I/O. Everything else is the
    wrapped store's (attributes are read through)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self._by_id: dict[str, Booking] = {}
        self.loaded = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def upcoming(self, phone: str, now: dt.datetime) -> list[Booking]:
        """This number's live bookings that have not ended, in start order."""
        if not self.loaded:
            self.load(now)  # `hookline prompt`: no runtime start warmed us
        found = [
            b
            for b in self._by_id.values()
            if b.phone == phone and b.service and not b.cancelled and b.end > now
        ]
        return sorted(found, key=lambda b: (b.start, b.id))

    def _note(self, bookings: list[Booking]) -> None:
        for b in bookings:
            if b.cancelled:
                self._by_id.pop(b.id, None)
            else:
                self._by_id[b.id] = b

    # -------------------------------------------------------------- Store

    async def bookings(self, lo: dt.datetime, hi: dt.datetime) -> list[Booking]:
        found = await self.inner.bookings(lo, hi)
        self._note(found)
        return found

    async def by_phone(self, phone: str, after: dt.datetime) -> list[Booking]:
        found = await self.inner.by_phone(phone, after)
        for b in list(self._by_id.values()):  # what the store no longer has is gone
            if b.phone == phone and b.end > after:
                del self._by_id[b.id]
        self._note(found)
        return found

    async def get(self, booking_id: str) -> Booking | None:
        found = await self.inner.get(booking_id)
        if found is not None:
            self._note([found])
        return found

    async def insert(self, booking: Booking) -> Booking | None:
        stored = await self.inner.insert(booking)
        if stored is not None:
            self._note([stored])
        return stored

    async def cancel(self, booking_id: str) -> bool:
        done = await self.inner.cancel(booking_id)
        self._by_id.pop(booking_id, None)
        return done

    async def aclose(self) -> None:
        await self.inner.aclose()

    def warm(self) -> None:
        self.inner.warm()
        self.load(dt.datetime.now(UTC))

    def close(self) -> None:
        self.inner.close()

    def load(self, now: dt.datetime) -> None:
        """Read the upcoming bookings once, synchronously (start-up may block)."""
        self.loaded = True
        try:
            self._note(_upcoming_now(self.inner, now))
        except Exception as e:  # the tools report an unreachable store on their own
            log.warning("could not read upcoming appointments for the prompt: %s", e)


def _upcoming_now(store: Store, now: dt.datetime) -> list[Booking]:
    """The bookings that end after `now`, read synchronously from either backend."""
    from .google_calendar import TAG, GoogleCalendarStore, _Events, _iso
    from .local_store import LocalStore

    if isinstance(store, LocalStore):
        return store.upcoming_sync(now)
    if isinstance(store, GoogleCalendarStore):
        page = store._run(  # the first 2500 are plenty for a prompt
            lambda events: events.list(
                calendarId=store.calendar_id,
                singleEvents=True,
                orderBy="startTime",
                maxResults=2500,
                timeMin=_iso(now),
                privateExtendedProperty=[f"{TAG}=1"],
            )
        )
        items = msgspec.convert(page, _Events).items
        return [b for e in items if (b := store._booking(e)) is not None]
    return []

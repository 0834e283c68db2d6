"""Scheduling rules as pure functions, shared by both backends.

Everything here is deterministic and does no I/O: opening hours and closures become
candidate start times (on a wall-clock grid in the shop's time zone, so daylight-saving
changes land where a person expects them), bookings become free bays, and a slot plus a
bay become a deterministic event id. Backends only store and query `Booking`s.

Times are aware datetimes; backends hand over and receive UTC.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import msgspec

from .settings import WEEKDAYS, CalendarSettings, parse_hours
from .vehicle import Vehicle

__all__ = [
    "Booking",
    "Rules",
    "available_slots",
    "bookable_range",
    "candidate_starts",
    "event_id",
    "free_bays",
    "loses_to",
    "normalize_phone",
    "overlaps",
    "parse_when",
    "spoken",
]

UTC = dt.UTC


class Booking(msgspec.Struct, kw_only=True):
    """One event on the schedule. `bay` is None for an event the shop added by hand:
    it takes one bay, we just do not know which."""

    id: str
    start: dt.datetime
    end: dt.datetime
    bay: int | None = None
    service: str = ""
    phone: str = ""
    customer_name: str = ""
    vehicle: str = ""  # "2018 Honda Civic": what the caller said, or vehicle_info described
    vehicle_info: Vehicle = msgspec.field(default_factory=Vehicle)
    notes: str = ""
    call_id: str = ""
    request_id: str = ""  # the LLM's tool-call id that created it
    replaces: str = ""  # the appointment this one was rescheduled from
    status: str = "confirmed"  # or "cancelled"
    created: dt.datetime | None = None
    # Six digits told to the customer at booking; with [tools.calendar_google]
    # other_number_lookup = "confirmation_code" it lets another number read this booking.
    confirmation_code: str = ""
    # The caller's email, when they gave one: on Google Calendar they are invited as an
    # attendee and Google sends them the invitation and its updates.
    email: str = ""

    @property
    def cancelled(self) -> bool:
        return self.status == "cancelled"


@dataclass(frozen=True)
class Rules:
    tz: ZoneInfo
    hours: dict[int, list[tuple[dt.time, dt.time]]]  # weekday (Monday 0) -> spans
    closures: frozenset[dt.date]
    services: dict[str, int]  # name -> minutes
    bays: int
    lead: dt.timedelta
    max_days_ahead: int
    step: dt.timedelta
    # [tools.calendar_google.service_synonyms]: the shop's words -> a service name.
    synonyms: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, s: CalendarSettings, default_tz: str) -> Rules:
        return cls(
            tz=ZoneInfo(s.timezone or default_tz),
            hours={WEEKDAYS.index(d): parse_hours(v) for d, v in s.hours.items()},
            closures=frozenset(s.closures),
            services=dict(s.services),
            bays=s.bays,
            lead=dt.timedelta(minutes=s.min_lead_minutes),
            max_days_ahead=s.max_days_ahead,
            step=dt.timedelta(minutes=s.slot_minutes),
            synonyms=dict(s.service_synonyms),
        )


def _wall(day: dt.date, t: dt.time, tz: ZoneInfo) -> dt.datetime | None:
    """The instant a local wall-clock time names, or None inside a spring-forward gap.
    In the repeated hour of a fall-back change the first occurrence is taken."""
    if t == dt.time.max:  # "24:00": the next midnight
        return _wall(day + dt.timedelta(days=1), dt.time(0), tz)
    local = dt.datetime.combine(day, t, tzinfo=tz)
    instant = local.astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) != local.replace(tzinfo=None):
        return None
    return instant


def _close(day: dt.date, t: dt.time, tz: ZoneInfo) -> dt.datetime:
    # A closing time inside a gap (never for a real shop) closes at the gap's end.
    return _wall(day, t, tz) or dt.datetime.combine(day, t, tzinfo=tz).astimezone(UTC)


def candidate_starts(
    rules: Rules, minutes: int, lo: dt.datetime, hi: dt.datetime
) -> Iterator[tuple[dt.datetime, dt.datetime]]:
    """Every (start, end) in UTC with lo <= start <= hi where a job of `minutes` fits in
    the opening hours of a day the shop is open, in time order. Starts are on the
    `step` grid counted from each opening time, in local wall-clock time."""
    length = dt.timedelta(minutes=minutes)
    day = lo.astimezone(rules.tz).date() - dt.timedelta(days=1)  # a span may cross midnight UTC
    last = hi.astimezone(rules.tz).date()
    while day <= last:
        if day not in rules.closures:
            for open_t, close_t in rules.hours.get(day.weekday(), ()):
                close = _close(day, close_t, rules.tz)
                wall = dt.datetime.combine(day, open_t)
                end_wall = dt.datetime.combine(day, dt.time(0)) + dt.timedelta(days=1)
                if close_t != dt.time.max:
                    end_wall = dt.datetime.combine(day, close_t)
                while wall < end_wall:
                    start = _wall(wall.date(), wall.time(), rules.tz)
                    wall += rules.step
                    if start is None:
                        continue
                    end = start + length  # elapsed time: a 2 h job is 2 h across DST
                    if end > close:
                        break
                    if start > hi:
                        return
                    if start >= lo:
                        yield start, end
        day += dt.timedelta(days=1)


def bookable_range(rules: Rules, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """[earliest, latest) start times a booking may have right now."""
    today = now.astimezone(rules.tz).date()
    horizon = today + dt.timedelta(days=rules.max_days_ahead + 1)
    latest = _wall(horizon, dt.time(0), rules.tz) or dt.datetime.combine(
        horizon, dt.time(0), tzinfo=rules.tz
    ).astimezone(UTC)
    return now + rules.lead, latest


def overlaps(b: Booking, start: dt.datetime, end: dt.datetime) -> bool:
    return not b.cancelled and b.start < end and start < b.end


def free_bays(
    bookings: Iterable[Booking], start: dt.datetime, end: dt.datetime, bays: int
) -> list[int]:
    """The bays (1..bays) a job from start to end may take, in the order to try them.

    A bay is taken by any booking on it that overlaps; each overlapping event without a
    bay (added by hand, or on a bay that no longer exists) takes one more bay, counted
    off the end of the list so that every process trying the same slot tries the same
    bays in the same order (that is what makes the event-id lock work)."""
    taken: set[int] = set()
    unplaced = 0
    for b in bookings:
        if overlaps(b, start, end):
            if b.bay is not None and 1 <= b.bay <= bays:
                taken.add(b.bay)
            else:
                unplaced += 1
    free = [bay for bay in range(1, bays + 1) if bay not in taken]
    return free[: max(0, len(free) - unplaced)]


def available_slots(
    rules: Rules,
    bookings: Sequence[Booking],
    minutes: int,
    lo: dt.datetime,
    hi: dt.datetime,
    limit: int,
    spacing: dt.timedelta = dt.timedelta(0),
) -> list[tuple[dt.datetime, dt.datetime]]:
    """Up to `limit` (start, end) in [lo, hi] that fit the hours and have a free bay,
    at least `spacing` apart (five offers a quarter-hour apart are no choice at all)."""
    out: list[tuple[dt.datetime, dt.datetime]] = []
    for start, end in candidate_starts(rules, minutes, lo, hi):
        if out and start < out[-1][0] + spacing:
            continue
        if free_bays(bookings, start, end, rules.bays):
            out.append((start, end))
            if len(out) >= limit:
                break
    return out


def event_id(calendar_id: str, start: dt.datetime, bay: int, generation: int = 0) -> str:
    """A deterministic Google event id (base32hex, a-v0-9) for one bay at one start time.

    Every process derives the same id for the same slot and bay, so the store's
    duplicate-id rejection (Google's 409, DuckDB's primary key) lets exactly one booking
    have it. `generation` moves past ids whose events were cancelled (Google keeps a
    deleted event's id reserved)."""
    key = f"{calendar_id}|{start.astimezone(UTC):%Y%m%dT%H%M%SZ}|{bay}|{generation}"
    digest = hashlib.sha256(key.encode()).digest()[:20]
    return base64.b32hexencode(digest).decode().lower().rstrip("=")


def loses_to(mine: Booking, other: Booking) -> bool:
    """Two overlapping bookings on one bay (different start times, so different ids):
    the later-created one yields, and on a tie both do (no booking beats a double one).

    Sound because a booking checks only after its own insert: if `mine` did not see
    `other`, `other` was stored after `mine` and so was created later."""
    if other.id == mine.id:
        return False
    far = dt.datetime.max.replace(tzinfo=UTC)
    return (other.created or far) <= (mine.created or far)


def normalize_phone(text: str, country_code: str = "1") -> str:
    """'(312) 555-0100' -> '+13125550100'; '' stays ''. Numbers are compared this way."""
    text = text.strip()
    digits = re.sub(r"\D", "", text)
    if not digits:
        return ""
    if text.startswith("+"):
        return "+" + digits
    if len(digits) == 10 and country_code == "1":
        return "+1" + digits
    if digits.startswith("00"):
        return "+" + digits[2:]
    if len(digits) > 10:
        return "+" + digits
    return "+" + country_code + digits


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_when(text: str, tz: ZoneInfo, *, end_of_day: bool = False) -> dt.datetime:
    """An ISO 8601 date or date-time from the LLM, in UTC. A time without an offset is
    the shop's local time; a bare date is that day's start (or end, for an upper bound).
    Raises ValueError."""
    text = text.strip().replace(" ", "T", 1)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    if _ISO_DATE.match(text):
        day = dt.date.fromisoformat(text)
        if end_of_day:
            day += dt.timedelta(days=1)
        return dt.datetime.combine(day, dt.time(0), tzinfo=tz).astimezone(UTC)
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value.astimezone(UTC)


def spoken(instant: dt.datetime, tz: ZoneInfo, now: dt.datetime | None = None) -> str:
    """'Monday, March 9 at 9:30 AM' ('tomorrow, Tuesday March 10, at noon') in the shop's
    time zone: text a TTS voice reads naturally."""
    local = instant.astimezone(tz)
    if local.minute == 0 and local.hour == 12:
        clock = "noon"
    else:
        hour = local.hour % 12 or 12
        minute = f":{local.minute:02d}" if local.minute else ""
        clock = f"{hour}{minute} {'AM' if local.hour < 12 else 'PM'}"
    day = f"{local:%A}, {local:%B} {local.day}"
    if now is not None:
        delta = (local.date() - now.astimezone(tz).date()).days
        if delta == 0:
            day = f"today, {local:%A} {local:%B} {local.day},"
        elif delta == 1:
            day = f"tomorrow, {local:%A} {local:%B} {local.day},"
    return f"{day} at {clock}"

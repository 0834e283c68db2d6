"""`[tools.calendar_google]`: the shop's rules and where its schedule lives."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal

import msgspec

from hookline import NonNegativeInt, NonNegativeSeconds, PositiveInt, Seconds

__all__ = ["WEEKDAYS", "CalendarSettings", "parse_hours"]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Bounds that keep date arithmetic (today + max_days_ahead, now + lead) inside datetime.
_TEN_YEARS_DAYS = 3660
Minutes = Annotated[int, msgspec.Meta(ge=0, le=_TEN_YEARS_DAYS * 24 * 60)]

_SPAN = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def parse_hours(value: str | list[str]) -> list[tuple[dt.time, dt.time]]:
    """'07:30-18:00' (or a list of such spans, for a lunch break) -> [(open, close)]."""
    spans = [value] if isinstance(value, str) else value
    out = []
    for span in spans:
        if span.strip().lower() == "closed":
            continue
        m = _SPAN.match(span)
        if not m:
            raise ValueError(f"opening hours {span!r} should look like '07:30-18:00'")
        h1, m1, h2, m2 = map(int, m.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
            raise ValueError(f"opening hours {span!r} is not a valid time span")
        close = dt.time.max if h2 == 24 else dt.time(h2, m2)
        if close <= dt.time(h1, m1):
            raise ValueError(f"opening hours {span!r} close before they open")
        out.append((dt.time(h1, m1), close))
    return sorted(out)


class CalendarSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The shop's scheduling rules and its calendar backend.

    `backend = "google"` keeps appointments in a Google Calendar (OAuth refresh token from
    `client_id_env`/`client_secret_env`/`refresh_token_env`, or a service-account key file
    named by `service_account_file_env`); `backend = "local"` keeps them in a DuckDB file.

    `other_number_lookup`: whose appointments `find_appointments` may read.
    - "off" (the default): only those booked under the number the call comes from (the
      carrier's caller id, never a number the model passes). A caller asking about another
      number, or calling with a withheld number, is told so and hears no one's data.
    - "confirmation_code": as "off", and also one booking under another number when the
      caller gives that number and the booking's six-digit confirmation code (random,
      told to the customer when they book, kept with the booking). After 5 wrong codes
      for one number within an hour, lookups by code of that number stop for the hour.
    Moving and cancelling are only ever done from the booking's own number.
    """

    backend: Literal["google", "local"] = "google"
    calendar_id: str = "primary"
    timezone: str | None = None  # IANA name; defaults to [agent] timezone
    # Weekday ("mon".."sun") -> "07:30-18:00", or a list of spans; a missing day is closed.
    hours: dict[str, str | list[str]] = msgspec.field(
        default_factory=lambda: {d: "08:00-17:00" for d in WEEKDAYS[:5]}
    )
    closures: list[dt.date] = []
    # Service name -> duration in minutes.
    # (Checked in __post_init__, not with Meta: msgspec's error would not name the service.)
    services: dict[str, int] = msgspec.field(default_factory=lambda: {"appointment": 60})
    # What callers say -> one of `services` ("oil" = "oil change", "transmission flush" =
    # "fluid service"). Case, spacing, plurals and "a/an/my" are forgiven without these.
    service_synonyms: dict[str, str] = {}
    bays: PositiveInt = 1  # how many jobs can run at once
    min_lead_minutes: Minutes = 60
    max_days_ahead: Annotated[int, msgspec.Meta(ge=1, le=_TEN_YEARS_DAYS)] = 60
    # Start times fall on this grid from the opening time.
    slot_minutes: Annotated[int, msgspec.Meta(ge=1, le=240)] = 15
    max_slots: PositiveInt = 5  # how many start times check_availability offers
    offer_spacing_minutes: Minutes = 60  # offered start times are at least this far apart
    other_number_lookup: Literal["off", "confirmation_code"] = "off"

    # Google backend.
    client_id_env: str = "GOOGLE_CLIENT_ID"
    client_secret_env: str = "GOOGLE_CLIENT_SECRET"
    refresh_token_env: str = "GOOGLE_REFRESH_TOKEN"
    # A file holding the refresh token instead (relative to the config file; written
    # 0600 by `hookline auth google`); when set, `refresh_token_env` is not read.
    refresh_token_file: str = ""
    service_account_file_env: str = ""  # e.g. "GOOGLE_APPLICATION_CREDENTIALS"
    api_endpoint: str = "https://www.googleapis.com/calendar/v3/"
    token_uri: str = "https://oauth2.googleapis.com/token"
    request_timeout_s: Seconds = 8.0
    rate_limit_retries: NonNegativeInt = 3
    rate_limit_backoff_s: NonNegativeSeconds = 0.5  # doubles per retry, capped by backoff_max_s
    backoff_max_s: NonNegativeSeconds = 4.0

    # Local backend: the DuckDB file (relative to the config file) of its appointments
    # table; with `[storage] backend = "postgresql"` the table is in that database
    # instead, shared by every process, and this file is not used.
    database: str = "data/calendar.duckdb"

    # Confirmation texts to the caller, through the outbox's `sms_channel` (on when
    # `[notifications.sms]` is configured). Fields: {shop}, {shop_phone}, {name},
    # {service}, {when}, {vehicle}, {appointment_id}, {code}. An empty template sends none.
    sms_channel: str = "sms"
    sms_booked: str = (
        "{shop}: your {service} is booked for {when}. To change it, call {shop_phone}. "
        "Reply STOP to opt out."
    )
    sms_rescheduled: str = (
        "{shop}: your {service} has moved to {when}. Questions? Call {shop_phone}. "
        "Reply STOP to opt out."
    )
    sms_cancelled: str = (
        "{shop}: your {service} on {when} is cancelled. To book again, call {shop_phone}. "
        "Reply STOP to opt out."
    )

    def __post_init__(self) -> None:
        if self.timezone is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError, OSError):  # "America" is a directory
                raise ValueError(
                    f"timezone: unknown time zone {self.timezone!r} (use e.g. 'America/Chicago')"
                ) from None
        for day, value in self.hours.items():
            if day not in WEEKDAYS:
                raise ValueError(f"hours: unknown weekday {day!r} (use {', '.join(WEEKDAYS)})")
            parse_hours(value)
        if self.database.strip() == ":memory:":
            # The file is opened for each operation: in memory, every booking is lost.
            raise ValueError("database: ':memory:' keeps nothing; name a file (or a tmp path)")
        if not self.services:
            raise ValueError("services: list at least one service with its minutes")
        for name, minutes in self.services.items():
            if minutes <= 0 or minutes > 24 * 60:
                raise ValueError(f"services: {name!r} must take 1 to 1440 minutes")
        from .notify import SAMPLE, render

        for field in ("sms_booked", "sms_rescheduled", "sms_cancelled"):
            try:
                render(getattr(self, field), SAMPLE)
            except (KeyError, ValueError, IndexError) as e:
                raise ValueError(
                    f"{field}: bad template ({type(e).__name__}: {e}); fields are "
                    "{shop} {shop_phone} {name} {service} {when} {vehicle} {appointment_id} {code}"
                ) from None
        from .services import ServiceMatcher

        ServiceMatcher(list(self.services), self.service_synonyms)  # names a known service
        # Secrets the chosen auth does not use are cleared, so that `hookline check`
        # (which asks for every non-empty `*_env`) does not demand them.
        if self.backend == "local":
            self.client_id_env = self.client_secret_env = self.refresh_token_env = ""
            self.service_account_file_env = ""
        elif self.service_account_file_env:
            self.client_id_env = self.client_secret_env = self.refresh_token_env = ""
            self.refresh_token_file = ""
        elif self.refresh_token_file:
            self.refresh_token_env = ""

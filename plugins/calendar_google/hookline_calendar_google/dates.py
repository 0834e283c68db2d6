"""Dates as a caller says them, resolved against today in the shop's time zone.

The model is told today's date (the prompt) and should pass ISO dates; these words are
accepted too, so "tomorrow" means the shop's tomorrow even when the model passes it
through, not the model's guess (nor the server's time zone):

- "today", "tomorrow", "the day after tomorrow";
- a weekday, optionally with "this" or "next" ("tuesday", "next tuesday"): the first
  such day after today (said on a Tuesday, "tuesday" is a week from today).

A date before today is never silently moved: `past_date_error` words the refusal with
today's date, so the model can ask the caller which day they mean.
"""

from __future__ import annotations

import datetime as dt
import re

__all__ = ["past_date_error", "relative_day", "spoken_date"]

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_WORDS = {"today": 0, "tonight": 0, "tomorrow": 1, "the day after tomorrow": 2}
_DAY_AFTER = re.compile(r"^(?:the )?day after tomorrow$")
_WEEKDAY = re.compile(r"^(?:(?:this|next|on|coming|this coming)\s+)?([a-z]+?)s?$")


def relative_day(text: str, today: dt.date) -> dt.date | None:
    """The date a caller's word for a day names, or None when it is not one of them."""
    words = " ".join(re.sub(r"[^a-z ]+", " ", text.lower()).split())
    if _DAY_AFTER.match(words):
        return today + dt.timedelta(days=2)
    if words in _DAY_WORDS:
        return today + dt.timedelta(days=_DAY_WORDS[words])
    m = _WEEKDAY.match(words)
    if m:
        name = m.group(1)
        for i, day in enumerate(_WEEKDAYS):
            if name in (day, day[:3]):
                ahead = (i - today.weekday() - 1) % 7 + 1  # 1..7 days: always after today
                return today + dt.timedelta(days=ahead)
    return None


def spoken_date(day: dt.date) -> str:
    """'Monday, November 30, 2026'."""
    return f"{day:%A}, {day:%B} {day.day}, {day.year}"


def past_date_error(asked: str, day: dt.date, today: dt.date) -> str:
    """The sentence a tool answers a date before today with."""
    return (
        f"{asked!r} is {spoken_date(day)}, which is in the past: today is "
        f"{spoken_date(today)} ({today.isoformat()}). Ask the caller which day they mean "
        "and use a date from today on."
    )

"""Dates the tools are given, resolved against today in the shop's time zone."""

from __future__ import annotations

import datetime as dt

import pytest
from calendar_google_helpers import ALICE, Shop, local, make_ctx

from hookline.tools import ToolError
from hookline_calendar_google.dates import relative_day

MONDAY = dt.date(2026, 3, 9)


@pytest.mark.parametrize(
    ("words", "day"),
    [
        ("today", MONDAY),
        ("Tomorrow", dt.date(2026, 3, 10)),
        ("the day after tomorrow", dt.date(2026, 3, 11)),
        ("next Tuesday", dt.date(2026, 3, 10)),
        ("thursday", dt.date(2026, 3, 12)),
        ("monday", dt.date(2026, 3, 16)),  # said on a Monday: a week from today
        ("2026-03-12", None),
        ("someday", None),
    ],
)
def test_day_words(words: str, day: dt.date | None) -> None:
    assert relative_day(words, MONDAY) == day


async def test_tomorrow_is_the_shops_tomorrow(shop: Shop) -> None:
    # 10:30 PM Monday in Chicago is already Tuesday in UTC: tomorrow is still Tuesday
    # the 10th for the shop (a closure), so the first opening is Wednesday the 11th.
    shop.clock.now = local("2026-03-09T22:30")
    result = await shop.call("check_availability", service="oil change", earliest="tomorrow")
    assert result.slots[0].start == "2026-03-11T07:30-05:00"
    nxt = await shop.call("check_availability", service="oil change", earliest="next thursday")
    assert nxt.slots[0].start == "2026-03-12T07:30-05:00"


async def test_a_past_date_is_a_sentence_naming_today(shop: Shop) -> None:
    shop.clock.now = local("2026-03-09T10:00")
    with pytest.raises(ToolError) as stale:
        await shop.call("check_availability", service="oil change", earliest="2024-06-04")
    assert str(stale.value) == (
        "'2024-06-04' is Tuesday, June 4, 2024, which is in the past: today is Monday, "
        "March 9, 2026 (2026-03-09). Ask the caller which day they mean and use a date "
        "from today on."
    )
    with pytest.raises(ToolError, match=r"in the past: today is Monday, March 9, 2026"):
        await shop.call(
            "book_appointment",
            make_ctx(ALICE),
            service="oil change",
            start="2026-03-06T09:00",
            customer_name="Pat Doe",
            vehicle="2018 Honda Civic",
        )
    # Earlier today is not a past date: it is too soon.
    with pytest.raises(ToolError, match="too soon"):
        await shop.call(
            "book_appointment",
            make_ctx(ALICE),
            service="oil change",
            start="2026-03-09T08:00",
            customer_name="Pat Doe",
            vehicle="2018 Honda Civic",
        )

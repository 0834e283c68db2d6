"""The pure scheduling rules: examples, and invariants checked with hypothesis."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import msgspec
import pytest
from calendar_google_helpers import SHOP
from hypothesis import given, settings
from hypothesis import strategies as st

from hookline.config import Config, decode_section
from hookline.errors import ConfigError
from hookline_calendar_google.schedule import (
    Booking,
    Rules,
    available_slots,
    bookable_range,
    candidate_starts,
    event_id,
    free_bays,
    loses_to,
    normalize_phone,
    parse_when,
    spoken,
)
from hookline_calendar_google.settings import CalendarSettings

UTC = dt.UTC
CHICAGO = ZoneInfo("America/Chicago")
RULES = Rules.from_settings(msgspec.convert(SHOP, CalendarSettings), "UTC")


def at(text: str, tz: ZoneInfo = CHICAGO) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=tz).astimezone(UTC)


# ------------------------------------------------------------------ examples


def test_candidates_on_a_spring_forward_day_keep_wall_clock_times() -> None:
    # A shop open through the night, on the day clocks skip 2:00-3:00.
    rules = Rules.from_settings(
        msgspec.convert({**SHOP, "hours": {"sun": "00:00-24:00"}, "slot_minutes": 30},
                        CalendarSettings), "UTC")  # fmt: skip
    got = [s.astimezone(CHICAGO).strftime("%H:%M") for s, _ in candidate_starts(
        rules, 60, at("2026-03-08T01:00"), at("2026-03-08T04:00"))]  # fmt: skip
    assert got == ["01:00", "01:30", "03:00", "03:30", "04:00"]  # 2:00 and 2:30 never exist
    # A job is its real length: 1:30 + 60 min is 3:30 on the clock.
    start, end = next(candidate_starts(rules, 60, at("2026-03-08T01:30"), at("2026-03-08T01:30")))
    assert end - start == dt.timedelta(hours=1)
    assert end.astimezone(CHICAGO).strftime("%H:%M") == "03:30"


def test_candidates_on_a_fall_back_day() -> None:
    rules = Rules.from_settings(
        msgspec.convert({**SHOP, "hours": {"sun": "00:00-03:00"}, "slot_minutes": 60},
                        CalendarSettings), "UTC")  # fmt: skip
    got = [(s.astimezone(CHICAGO).strftime("%H:%M%z")) for s, _ in candidate_starts(
        rules, 60, at("2026-11-01T00:00"), at("2026-11-01T03:00"))]  # fmt: skip
    # 1:00 happens twice; the grid takes it once. The day is 4 h long, 3 slots fit.
    assert got[:2] == ["00:00-0500", "01:00-0500"]
    assert len(got) == 3


def test_bookable_range() -> None:
    now = at("2026-03-06T08:00")
    earliest, latest = bookable_range(RULES, now)
    assert earliest == at("2026-03-06T09:00")
    assert latest == at("2026-04-06T00:00")  # 30 days ahead, whole days, local midnight


def test_free_bays() -> None:
    s, e = at("2026-03-09T09:00"), at("2026-03-09T10:00")

    def b(
        i: int, bay: int | None, start: str = "09:30", end: str = "10:30", **kw: object
    ) -> Booking:
        return Booking(id=f"id{i}", start=at(f"2026-03-09T{start}"), end=at(f"2026-03-09T{end}"),
                       bay=bay, **kw)  # type: ignore[arg-type]  # fmt: skip

    assert free_bays([], s, e, 3) == [1, 2, 3]
    assert free_bays([b(1, 2)], s, e, 3) == [1, 3]
    assert free_bays([b(1, 2), b(2, None)], s, e, 3) == [1]  # a hand-made event takes one
    assert free_bays([b(1, 2, "10:00", "11:00")], s, e, 3) == [1, 2, 3]  # touching is fine
    assert free_bays([b(1, 2, status="cancelled")], s, e, 3) == [1, 2, 3]
    assert free_bays([b(1, 7)], s, e, 3) == [1, 2]  # a bay that no longer exists


def test_event_ids_are_deterministic_base32hex() -> None:
    start = at("2026-03-09T09:00")
    ids = {event_id("primary", start, bay, gen) for bay in (1, 2) for gen in (0, 1)}
    assert len(ids) == 4
    assert event_id("primary", start, 1) == event_id("primary", start.astimezone(CHICAGO), 1)
    assert event_id("primary", start, 1) != event_id("other", start, 1)
    assert all(re.fullmatch(r"[a-v0-9]{5,1024}", i) for i in ids)


def test_overlap_tie_break() -> None:
    s, e = at("2026-03-09T09:00"), at("2026-03-09T10:00")
    first = Booking(id="b", start=s, end=e, created=dt.datetime(2026, 1, 1, tzinfo=UTC))
    second = Booking(id="a", start=s, end=e, created=dt.datetime(2026, 1, 2, tzinfo=UTC))
    assert loses_to(second, first) and not loses_to(first, second)
    tie = msgspec.structs.replace(second, created=first.created)
    assert loses_to(tie, first) and loses_to(first, tie)  # both yield: never both stay
    assert not loses_to(first, first)


@pytest.mark.parametrize(
    ("text", "want"),
    [("(312) 555-0100", "+13125550100"), ("+44 20 7946 0958", "+442079460958"),
     ("1-312-555-0100", "+13125550100"), ("0044 20 7946 0958", "+442079460958"), ("", "")],
)  # fmt: skip
def test_normalize_phone(text: str, want: str) -> None:
    assert normalize_phone(text) == want


def test_parse_when_and_spoken() -> None:
    assert parse_when("2026-03-09T09:00", CHICAGO) == at("2026-03-09T09:00")
    assert parse_when("2026-03-09 09:00", CHICAGO) == at("2026-03-09T09:00")
    assert parse_when("2026-03-09T14:00Z", CHICAGO) == at("2026-03-09T09:00")
    assert parse_when("2026-03-09T10:00-04:00", CHICAGO) == at("2026-03-09T09:00")
    assert parse_when("2026-03-09", CHICAGO) == at("2026-03-09T00:00")
    assert parse_when("2026-03-09", CHICAGO, end_of_day=True) == at("2026-03-10T00:00")
    with pytest.raises(ValueError):
        parse_when("tomorrow morning", CHICAGO)
    now = at("2026-03-08T12:00")
    assert spoken(at("2026-03-09T12:00"), CHICAGO, now) == "tomorrow, Monday March 9, at noon"
    assert spoken(at("2026-03-08T16:45"), CHICAGO, now) == "today, Sunday March 8, at 4:45 PM"
    assert spoken(at("2026-03-11T00:30"), CHICAGO, now) == "Wednesday, March 11 at 12:30 AM"


def test_settings_errors_name_the_key() -> None:
    config = msgspec.convert(
        {"agent": {}, "providers": {"telephony": "t", "stt": "s", "llm": "l", "tts": "t"},
         "path": "shop.toml"}, Config)  # fmt: skip

    def decode(**raw: object) -> CalendarSettings:
        return decode_section(config, "tools.calendar_google", raw, CalendarSettings)

    assert decode().backend == "google"
    for raw, words in [
        ({"hours": {"monday": "08:00-17:00"}}, "unknown weekday 'monday'"),
        ({"hours": {"mon": "8 to 5"}}, "should look like '07:30-18:00'"),
        ({"hours": {"mon": "17:00-08:00"}}, "close before they open"),
        ({"services": {"brakes": 0}}, "'brakes' must take 1 to 1440 minutes"),
        ({"bays": 0}, "tools.calendar_google.bays: expected `int` >= 1"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"backend": "outlook"}, "tools.calendar_google.backend"),
        ({"colour": "red"}, "unknown key 'colour'"),
        ({"database": ":memory:"}, "database: ':memory:' keeps nothing"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(words)) as e:
            decode(**raw)
        assert "shop.toml" in str(e.value) and "tools.calendar_google" in str(e.value)
    local = decode(backend="local")
    assert local.client_id_env == local.refresh_token_env == ""  # no Google secrets asked for
    split = decode(hours={"mon": ["08:00-12:00", "13:00-17:00"], "sat": "closed"})
    rules = Rules.from_settings(split, "UTC")
    assert rules.hours[0] == [(dt.time(8), dt.time(12)), (dt.time(13), dt.time(17))]
    assert rules.hours[5] == []


# ------------------------------------------------------------------ invariants

spans = st.tuples(st.integers(0, 23 * 4), st.integers(1, 24 * 4)).map(
    lambda p: (p[0] * 15, min(24 * 60, p[0] * 15 + p[1] * 15))
)


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


ZONES = ["America/Chicago", "Europe/London", "Australia/Lord_Howe", "UTC"]  # Lord Howe: 30 min DST


@st.composite
def shop_rules(draw: st.DrawFn) -> Rules:
    hours = {}
    for day in draw(st.sets(st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]))):
        lo, hi = draw(spans)
        hours[day] = f"{_hhmm(lo)}-{_hhmm(hi)}"
    raw = {
        "timezone": draw(st.sampled_from(ZONES)),
        "hours": hours,
        "closures": draw(st.lists(st.dates(dt.date(2026, 3, 1), dt.date(2026, 4, 10)), max_size=5)),
        "services": {"job": 30},
        "bays": draw(st.integers(1, 4)),
        "slot_minutes": draw(st.sampled_from([5, 10, 15, 20, 30, 60])),
    }  # fmt: skip
    return Rules.from_settings(msgspec.convert(raw, CalendarSettings), "UTC")


window_start = st.datetimes(
    dt.datetime(2026, 3, 1), dt.datetime(2026, 4, 1), timezones=st.just(UTC)
)


@settings(max_examples=150, deadline=None)
@given(rules=shop_rules(), lo=window_start, days=st.integers(0, 9), minutes=st.integers(5, 300))
def test_every_candidate_fits_the_rules(
    rules: Rules, lo: dt.datetime, days: int, minutes: int
) -> None:
    hi = lo + dt.timedelta(days=days, hours=7)
    got = list(candidate_starts(rules, minutes, lo, hi))
    assert [s for s, _ in got] == sorted({s for s, _ in got})  # in order, no repeats
    for start, end in got:
        assert lo <= start <= hi
        assert end - start == dt.timedelta(minutes=minutes)
        local = start.astimezone(rules.tz)
        assert local.date() not in rules.closures
        spans_today = rules.hours.get(local.weekday(), [])
        # The start is on the grid of an opening span of its local day, and the job ends
        # by that span's close.
        fitting = []
        for open_t, close_t in spans_today:
            opened = dt.datetime.combine(local.date(), open_t)
            offset = local.replace(tzinfo=None) - opened
            close = (
                dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(0))
                if close_t == dt.time.max
                else dt.datetime.combine(local.date(), close_t)
            )
            close_at = close.replace(tzinfo=rules.tz).astimezone(UTC)
            if (
                offset >= dt.timedelta(0)
                and offset % rules.step == dt.timedelta(0)
                and end <= close_at
            ):
                fitting.append(open_t)
        assert fitting, (local, spans_today)


@settings(max_examples=150, deadline=None)
@given(
    rules=shop_rules(),
    lo=window_start,
    minutes=st.integers(5, 180),
    jobs=st.lists(
        st.tuples(st.integers(0, 3 * 24 * 4), st.integers(1, 16), st.none() | st.integers(1, 5)),
        max_size=20,
    ),
)  # fmt: skip
def test_offered_slots_always_have_a_free_bay(
    rules: Rules, lo: dt.datetime, minutes: int, jobs: list[tuple[int, int, int | None]]
) -> None:
    bookings = [
        Booking(id=f"b{i}", start=lo + dt.timedelta(minutes=15 * q),
                end=lo + dt.timedelta(minutes=15 * (q + n)), bay=bay)
        for i, (q, n, bay) in enumerate(jobs)
    ]  # fmt: skip
    hi = lo + dt.timedelta(days=3)
    offered = available_slots(rules, bookings, minutes, lo, hi, limit=1000)
    all_fitting = [s for s in candidate_starts(rules, minutes, lo, hi)]
    assert set(offered) <= set(all_fitting)
    for start, end in all_fitting:
        overlapping = [b for b in bookings if b.start < end and start < b.end]
        placed = {b.bay for b in overlapping if b.bay is not None and b.bay <= rules.bays}
        unplaced = len(overlapping) - sum(1 for b in overlapping if b.bay in placed)
        free = free_bays(bookings, start, end, rules.bays)
        assert not set(free) & placed  # never a bay that is in use
        assert len(free) == max(0, rules.bays - len(placed) - unplaced)
        assert ((start, end) in offered) == bool(free)

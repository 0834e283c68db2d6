"""The shop's scheduling scenarios, run against both backends (Google fake and DuckDB)."""

from __future__ import annotations

import datetime as dt
import random
import re
import time
from pathlib import Path

import pytest
import trio
from calendar_google_helpers import ALICE, BOB, Shop, ShopFactory, local, make_ctx

from hookline import Storage
from hookline.tools import ToolError
from hookline_calendar_google.local_store import SCHEMA
from hookline_calendar_google.schedule import Booking, event_id
from hookline_calendar_google.tools import BookingResult

CAROL = "+13125550103"


def starts(result: object) -> list[str]:
    return [s.start for s in result.slots]  # type: ignore[attr-defined]


async def book(
    shop: Shop,
    who: str = ALICE,
    start: str = "2026-03-09T09:00",
    *,
    service: str = "oil change",
    tool_call_id: str = "tc-1",
    **extra: object,
) -> BookingResult:
    return await shop.call(
        "book_appointment",
        make_ctx(who, call_id=f"call-{who[-4:]}", tool_call_id=tool_call_id),
        service=service,
        start=start,
        customer_name=extra.pop("customer_name", "Pat Doe"),
        vehicle=extra.pop("vehicle", "2018 Honda Civic"),
        **extra,
    )


async def live_at(shop: Shop, start: str, minutes: int = 30) -> list[Booking]:
    begin = local(start)
    return await shop.store.bookings(begin, begin + dt.timedelta(minutes=minutes))


# ------------------------------------------------------------------ slots


async def test_slots_follow_opening_hours_and_service_length(shop: Shop) -> None:
    # Brakes take 2 h; Monday closes at 18:00, so 16:00 is the last start.
    late = await shop.call("check_availability", service="brakes",
                           earliest="2026-03-09T15:30", latest="2026-03-09")  # fmt: skip
    assert starts(late)[:3] == ["2026-03-09T15:30-05:00", "2026-03-09T15:45-05:00",
                                "2026-03-09T16:00-05:00"]  # fmt: skip
    # Nothing else that day: the rest are the next open day (Tuesday is a closure).
    assert all(s.startswith("2026-03-11T") for s in starts(late)[3:])
    # Saturday is 8-13: a 2 h job starts by 11:00.
    sat = await shop.call("check_availability", service="brakes",
                          earliest="2026-03-07T10:30", latest="2026-03-07")  # fmt: skip
    assert starts(sat)[:3] == ["2026-03-07T10:30-06:00", "2026-03-07T10:45-06:00",
                               "2026-03-07T11:00-06:00"]  # fmt: skip
    # Before opening: the first start is the opening time.
    early = await shop.call("check_availability", service="oil change", earliest="2026-03-09T06:00")
    assert starts(early)[0] == "2026-03-09T07:30-05:00"
    assert early.slots[0].spoken == "Monday, March 9 at 7:30 AM"
    # Today, 8:00 now with an hour's lead time: 9:00 is the first offer.
    today = await shop.call("check_availability", service="oil change")
    assert starts(today)[0] == "2026-03-06T09:00-06:00"
    assert today.slots[0].spoken.startswith("today, Friday March 6, at 9 AM")
    assert "oil change (30 minutes)" in today.message


async def test_offers_are_spread_out(make_shop: ShopFactory) -> None:
    shop = make_shop(offer_spacing_minutes=60, max_slots=3)
    await book(shop, ALICE, "2026-03-09T10:00")
    await book(shop, BOB, "2026-03-09T10:00")  # 10:00 is full
    result = await shop.call(
        "check_availability", service="oil change", earliest="2026-03-09T09:00"
    )
    assert starts(result) == ["2026-03-09T09:00-05:00", "2026-03-09T10:30-05:00",
                              "2026-03-09T11:30-05:00"]  # fmt: skip
    assert result.message == (
        "Openings for oil change (30 minutes): Monday, March 9 at 9 AM; "
        "Monday, March 9 at 10:30 AM; Monday, March 9 at 11:30 AM."
    )


async def test_closure_day_offers_the_next_open_day(shop: Shop) -> None:
    result = await shop.call("check_availability", service="diagnostics",
                             earliest="2026-03-10", latest="2026-03-10")  # fmt: skip
    assert "Nothing is open" in result.message
    assert starts(result)[0] == "2026-03-11T07:30-05:00"
    with pytest.raises(ToolError, match="closed that day"):
        await book(shop, start="2026-03-10T09:00")
    with pytest.raises(ToolError, match="closed that day"):  # Sunday
        await book(shop, start="2026-03-08T09:00")


async def test_bay_capacity_and_service_length(shop: Shop) -> None:
    await book(shop, ALICE, "2026-03-09T09:00")
    await book(shop, BOB, "2026-03-09T09:00")  # the second bay
    with pytest.raises(ToolError, match="already taken") as taken:
        await book(shop, CAROL, "2026-03-09T09:00")
    assert "nearest openings" in str(taken.value)
    assert len(await live_at(shop, "2026-03-09T09:00")) == 2
    # 9:15 overlaps both 9:00-9:30 jobs; 9:30 is free again.
    oil = await shop.call("check_availability", service="oil change",
                          earliest="2026-03-09T09:00", latest="2026-03-09T09:15")  # fmt: skip
    assert starts(oil)[0] == "2026-03-09T09:30-05:00"
    # A 2 h brake job from 7:30 or later would overlap 9:00: 9:30 is its first start too.
    brakes = await shop.call("check_availability", service="brakes", earliest="2026-03-09")
    assert starts(brakes)[0] == "2026-03-09T09:30-05:00"


async def test_event_without_a_bay_takes_one(make_shop: ShopFactory) -> None:
    shop = make_shop(bays=1)
    begin = local("2026-03-09T09:00")
    hand = Booking(id="handaddedevent01", start=begin, end=begin + dt.timedelta(hours=1))
    assert await shop.store.insert(hand) is not None
    result = await shop.call(
        "check_availability", service="oil change", earliest="2026-03-09T08:45"
    )
    assert starts(result)[0] == "2026-03-09T10:00-05:00"


async def test_lead_time_horizon_and_grid(shop: Shop) -> None:
    with pytest.raises(ToolError, match="too soon"):
        await book(shop, start="2026-03-06T08:30")
    with pytest.raises(ToolError, match="30 days ahead"):
        await book(shop, start="2026-04-20T09:00")
    with pytest.raises(ToolError, match="30 days ahead"):
        await shop.call("check_availability", service="oil change", earliest="2026-05-01")
    with pytest.raises(ToolError, match="can't start at that time") as off_grid:
        await book(shop, start="2026-03-09T09:07")
    assert "Monday, March 9 at 9:15 AM" in str(off_grid.value)
    with pytest.raises(ToolError, match="can't start at that time"):
        await book(shop, service="brakes", start="2026-03-09T16:30")  # would end 18:30
    with pytest.raises(ToolError, match="couldn't read the time"):
        await book(shop, start="next tuesday")
    assert await shop.store.bookings(local("2026-03-01T00:00"), local("2026-05-01T00:00")) == []


async def test_services_are_an_enum_and_matched_loosely(shop: Shop) -> None:
    # The schema shows the enum; a wording outside it still decodes, and the tool (not
    # msgspec) answers with the services offered (issue 12 item 3).
    check = shop.tools["check_availability"]
    assert check.schema().parameters["properties"]["service"]["enum"][0] == "alignment"
    with pytest.raises(ToolError, match=r"^We don't have a service called 'transmission rebuild'"):
        await check.handler(check.decode('{"service": "transmission rebuild"}'), make_ctx())
    result = await shop.scheduler.check_availability("Oil Changes", None, None)
    assert result.service == "oil change"
    with pytest.raises(ToolError, match="We offer: oil change, tire rotation"):
        await shop.scheduler.check_availability("transmission rebuild", None, None)


# ------------------------------------------------------------------ daylight saving


async def test_booking_across_spring_forward_lands_at_local_time(shop: Shop) -> None:
    # Booked on Friday (UTC-6) for Monday, after clocks went forward (UTC-5).
    result = await book(shop, start="2026-03-09T09:00", service="brakes")
    assert result.appointment.start == "2026-03-09T09:00-05:00"
    assert result.appointment.end == "2026-03-09T11:00-05:00"
    assert result.appointment.spoken == "Monday, March 9 at 9 AM"
    (stored,) = await live_at(shop, "2026-03-09T09:00")
    assert stored.start == dt.datetime(2026, 3, 9, 14, 0, tzinfo=dt.UTC)
    if shop.fake is not None:
        (event,) = shop.fake.live_events()
        assert event["start"] == {
            "dateTime": "2026-03-09T09:00:00-05:00",
            "timeZone": "America/Chicago",
        }
    # Friday's slots are still at UTC-6.
    friday = await shop.call("check_availability", service="brakes", earliest="2026-03-06T15:00")
    assert starts(friday)[0] == "2026-03-06T15:00-06:00"


async def test_booking_across_fall_back_lands_at_local_time(shop: Shop) -> None:
    shop.clock.now = dt.datetime(2026, 10, 30, 14, 0, tzinfo=dt.UTC)  # Friday, UTC-5
    result = await book(shop, start="2026-11-02T07:30")  # Monday, UTC-6
    assert result.appointment.start == "2026-11-02T07:30-06:00"
    (stored,) = await live_at(shop, "2026-11-02T07:30")
    assert stored.start == dt.datetime(2026, 11, 2, 13, 30, tzinfo=dt.UTC)
    slots = await shop.call("check_availability", service="oil change", earliest="2026-11-02")
    assert starts(slots)[0] == "2026-11-02T07:30-06:00"  # the other bay


# ------------------------------------------------------------------ no double booking


async def test_race_for_the_last_bay_books_exactly_one(make_shop: ShopFactory) -> None:
    if make_shop.fake:
        make_shop.fake.latency_s = 0.05  # both read the free bay before either writes
    shops = [make_shop(bays=1) for _ in range(3)]  # three processes
    callers = [ALICE, BOB, CAROL]
    slots = ["2026-03-09T09:00", "2026-03-09T10:00", "2026-03-11T14:00"]
    outcomes: list[tuple[str, str, object]] = []

    async def attempt(shop: Shop, who: str, start: str) -> None:
        try:
            outcomes.append((start, who, await book(shop, who, start)))
        except ToolError as e:
            outcomes.append((start, who, e))

    async with trio.open_nursery() as nursery:
        for start in slots:
            for shop, who in zip(shops, callers, strict=True):
                nursery.start_soon(attempt, shop, who, start)
    for start in slots:
        won = [r for s, _, r in outcomes if s == start and isinstance(r, BookingResult)]
        lost = [r for s, _, r in outcomes if s == start and isinstance(r, ToolError)]
        assert len(won) == 1 and len(lost) == 2, (start, outcomes)
        assert "already taken" in str(lost[0])
        assert len(await live_at(shops[0], start)) == 1
    if make_shop.fake:  # the losers were turned away by the event-id lock itself
        assert sum(r.status == 409 for r in make_shop.fake.requests) >= len(slots) * 2


async def test_overlapping_bookings_with_different_starts_race(make_shop: ShopFactory) -> None:
    # Different start times mean different event ids: the overlap check settles it.
    if make_shop.fake:
        make_shop.fake.latency_s = 0.05
    a, b = make_shop(bays=1), make_shop(bays=1)
    results: dict[str, object] = {}

    async def attempt(shop: Shop, who: str, start: str, service: str) -> None:
        try:
            results[who] = await book(shop, who, start, service=service)
        except ToolError as e:
            results[who] = e

    async with trio.open_nursery() as nursery:
        nursery.start_soon(attempt, a, ALICE, "2026-03-09T09:00", "brakes")
        nursery.start_soon(attempt, b, BOB, "2026-03-09T10:00", "oil change")
    assert sum(isinstance(r, BookingResult) for r in results.values()) == 1, results
    if make_shop.fake:  # both inserted; the later one saw the earlier and withdrew
        assert len(make_shop.fake.api_requests("POST")) == 2
        assert len(make_shop.fake.api_requests("DELETE")) == 1
    assert len(await live_at(a, "2026-03-09T09:00", minutes=120)) == 1


# One slot window per round: every job overlaps 10:00-10:30, so on one bay exactly one fits.
RACE_DAYS = ["2026-03-09", "2026-03-11", "2026-03-12", "2026-03-13", "2026-03-16",
             "2026-03-17", "2026-03-18"]  # fmt: skip
RACERS = [(ALICE, "09:00", "brakes"), (BOB, "09:30", "diagnostics"), (CAROL, "10:00", "oil change"),
          ("+13125550104", "09:45", "state inspection")]  # fmt: skip


async def test_no_double_booking_whatever_the_write_timing(make_shop: ShopFactory) -> None:
    """Issue 10 #11: a random 0-30 ms delay in each write (the local store's insert
    thread, or Google's answer) must never let two overlapping jobs share a bay."""
    shops = [make_shop(bays=1), make_shop(bays=1)]  # two callers on each of two stores
    if make_shop.fake:
        make_shop.fake.latency_jitter_s = 0.03
    else:
        delays = random.Random(11)
        for shop in shops:
            shop.store.before_insert = lambda: time.sleep(delays.uniform(0, 0.03))
    raced: list[str] = []

    async def attempt(results: dict[str, object], shop: Shop, who: str, start: str,
                      service: str) -> None:  # fmt: skip
        try:
            results[who] = await book(shop, who, start, service=service)
        except ToolError as e:
            results[who] = e

    for day in RACE_DAYS:
        results: dict[str, object] = {}
        async with trio.open_nursery() as nursery:
            for i, (who, at, service) in enumerate(RACERS):
                nursery.start_soon(attempt, results, shops[i % 2], who, f"{day}T{at}", service)
        won = [r for r in results.values() if isinstance(r, BookingResult)]
        lost = [str(r) for r in results.values() if isinstance(r, ToolError)]
        assert len(won) == 1 and len(lost) == 3, (day, results)
        assert all("already taken" in m for m in lost), lost
        raced += [m for m in lost if "another caller just booked it" in m]
        assert len(await live_at(shops[0], f"{day}T09:00", minutes=120)) == 1, day
    assert raced  # some losers saw the bay free, lost at the write, and were told so


# ------------------------------------------------------------------ whose appointments


async def test_lookup_is_limited_to_the_callers_number(shop: Shop) -> None:
    """Issue 10 #4: a caller cannot read another number's appointments."""
    await book(shop, BOB, "2026-03-09T09:00", customer_name="Robert Stone",
               vehicle="2015 Ford F-150")  # fmt: skip
    for asked in ("(312) 555-0102", BOB, "312.555.0102"):
        with pytest.raises(ToolError) as refused:
            await shop.call("find_appointments", make_ctx(ALICE), phone=asked)
        said = str(refused.value)
        assert "I can only look up appointments for the number you're calling from" in said
        leaked = ["Robert", "Stone", "Ford", "F-150", "March", "9 AM", "0102", "oil"]
        assert [w for w in leaked if w in said] == [], said
    with pytest.raises(ToolError, match="can't see the number you're calling from"):
        await shop.call("find_appointments", make_ctx(""), phone=BOB)  # caller id withheld
    if shop.fake:  # the calendar was never even asked about Bob's number
        assert not [r for r in shop.fake.api_requests("GET") if f"phone={BOB}" in str(r.query)]
    own = await shop.call("find_appointments", make_ctx(BOB), phone="312-555-0102")
    assert [a.customer_name for a in own.appointments] == ["Robert Stone"]


async def test_another_number_with_the_appointments_confirmation_code(
    make_shop: ShopFactory,
) -> None:
    shop = make_shop(other_number_lookup="confirmation_code")
    booked = await book(shop, BOB, "2026-03-09T09:00", customer_name="Robert Stone")
    other = await book(shop, BOB, "2026-03-11T09:00", service="alignment")
    code = booked.appointment.confirmation_code
    assert re.fullmatch(r"\d{6}", code) and " ".join(code) in booked.message
    assert other.appointment.confirmation_code != code
    # Alice (calling for Bob) with the code sees that one appointment, not Bob's others.
    found = await shop.call("find_appointments", make_ctx(ALICE), phone=BOB,
                            confirmation_code=" ".join(code))  # fmt: skip
    assert [a.appointment_id for a in found.appointments] == [booked.appointment.appointment_id]
    with pytest.raises(ToolError, match="the appointment's confirmation code") as bare:
        await shop.call("find_appointments", make_ctx(ALICE), phone=BOB)
    assert "Robert" not in str(bare.value)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for _ in range(5):
        with pytest.raises(ToolError, match="doesn't match") as miss:
            await shop.call("find_appointments", make_ctx(ALICE), phone=BOB,
                            confirmation_code=wrong)  # fmt: skip
        assert "Robert" not in str(miss.value) and "March" not in str(miss.value)
    # Guessing is bounded: after five misses even the right code is refused for a while.
    with pytest.raises(ToolError, match="too many"):
        await shop.call("find_appointments", make_ctx(ALICE), phone=BOB, confirmation_code=code)
    shop.clock.now += dt.timedelta(hours=1, minutes=1)
    again = await shop.call("find_appointments", make_ctx(ALICE), phone=BOB,
                            confirmation_code=code)  # fmt: skip
    assert len(again.appointments) == 1
    # The code never unlocks changes: those stay with the booking number.
    with pytest.raises(ToolError, match="isn't the number"):
        await shop.call("cancel_appointment", make_ctx(ALICE),
                        appointment_id=booked.appointment.appointment_id)  # fmt: skip
    mine = await shop.call("find_appointments", make_ctx(BOB))
    assert len(mine.appointments) == 2


async def test_confirmation_code_is_ignored_unless_the_shop_enables_it(shop: Shop) -> None:
    booked = await book(shop, BOB)
    stored = await shop.store.get(booked.appointment.appointment_id)
    assert stored.confirmation_code  # kept, so the shop can turn lookups by code on later
    assert not booked.appointment.confirmation_code and "onfirmation" not in booked.message
    assert (
        "confirmation_code" not in shop.tools["find_appointments"].schema().parameters["properties"]
    )
    with pytest.raises(ToolError, match="number you're calling from"):
        await shop.call("find_appointments", make_ctx(ALICE), phone=BOB,
                        confirmation_code=stored.confirmation_code)  # fmt: skip


async def test_retried_booking_creates_one_event(shop: Shop) -> None:
    first = await book(shop, tool_call_id="tc-1")
    again = await book(shop, tool_call_id="tc-1")  # the engine retried the same request
    repeat = await book(shop, tool_call_id="tc-9", customer_name="Pat")  # asked again later
    assert not first.already_booked and again.already_booked and repeat.already_booked
    assert first.appointment.appointment_id == again.appointment.appointment_id
    assert repeat.appointment.appointment_id == first.appointment.appointment_id
    assert len(await live_at(shop, "2026-03-09T09:00")) == 1


async def test_concurrent_duplicate_requests_create_one_event(make_shop: ShopFactory) -> None:
    if make_shop.fake:
        make_shop.fake.latency_s = 0.05
    a, b = make_shop(), make_shop()
    results: list[BookingResult] = []

    async def attempt(shop: Shop) -> None:
        results.append(await book(shop, ALICE, "2026-03-09T09:00"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(attempt, a)
        nursery.start_soon(attempt, b)
    assert {r.appointment.appointment_id for r in results} == {
        event_id(a.scheduler.calendar_id, local("2026-03-09T09:00"), 1)
    }
    assert sorted(r.already_booked for r in results) == [False, True]
    assert len(await live_at(a, "2026-03-09T09:00")) == 1


async def test_booking_carries_phone_call_service_and_vehicle(shop: Shop) -> None:
    result = await book(shop, BOB, notes="squeaks when braking", vehicle="2015 Ford F-150")
    stored = await shop.store.get(result.appointment.appointment_id)
    assert stored is not None
    assert (stored.phone, stored.call_id, stored.service, stored.vehicle, stored.bay) == (
        BOB, "call-0102", "oil change", "2015 Ford F-150", 1,
    )  # fmt: skip
    assert stored.request_id == "tc-1"
    explicit = await book(shop, ALICE, "2026-03-09T11:00", phone="(312) 555-0199")
    assert explicit.appointment.phone == "+13125550199"
    with pytest.raises(ToolError, match="need a phone number"):
        await book(shop, "", "2026-03-09T12:00")


# ------------------------------------------------------------------ find, move, cancel


async def test_find_appointments_lists_the_callers_upcoming(shop: Shop) -> None:
    await book(shop, ALICE, "2026-03-11T09:00", service="alignment")
    await book(shop, ALICE, "2026-03-09T09:00")
    await book(shop, BOB, "2026-03-09T09:00")
    mine = await shop.call("find_appointments", make_ctx(ALICE))
    assert [(a.service, a.start) for a in mine.appointments] == [
        ("oil change", "2026-03-09T09:00-05:00"),
        ("alignment", "2026-03-11T09:00-05:00"),
    ]
    assert "alignment on Wednesday, March 11 at 9 AM" in mine.message
    with pytest.raises(ToolError, match="number you're calling from"):  # not Bob's
        await shop.call("find_appointments", make_ctx(ALICE), phone="(312) 555-0102")
    shop.clock.now = local("2026-03-10T12:00")  # Monday's is past now
    later = await shop.call("find_appointments", make_ctx(ALICE))
    assert [a.service for a in later.appointments] == ["alignment"]
    nobody = await shop.call("find_appointments", make_ctx("+13125550999"))
    assert nobody.appointments == [] and "don't see any" in nobody.message


async def test_cancel_only_from_the_booking_number(shop: Shop) -> None:
    booked = await book(shop, ALICE)
    appointment_id = booked.appointment.appointment_id
    with pytest.raises(ToolError, match="isn't the number you're calling from"):
        await shop.call("cancel_appointment", make_ctx(BOB), appointment_id=appointment_id)
    with pytest.raises(ToolError, match="isn't the number"):  # caller id withheld
        await shop.call("cancel_appointment", make_ctx(""), appointment_id=appointment_id)
    assert len(await live_at(shop, "2026-03-09T09:00")) == 1
    done = await shop.call("cancel_appointment", make_ctx(ALICE), appointment_id=appointment_id)
    assert done.cancelled and "Cancelled the oil change on Monday, March 9 at 9 AM" in done.message
    assert await live_at(shop, "2026-03-09T09:00") == []
    again = await shop.call("cancel_appointment", make_ctx(ALICE), appointment_id=appointment_id)
    assert "already cancelled" in again.message
    with pytest.raises(ToolError, match="couldn't find that appointment"):
        await shop.call("cancel_appointment", make_ctx(ALICE), appointment_id="nosuchappointment")


async def test_a_cancelled_slot_can_be_booked_again(shop: Shop) -> None:
    first = await book(shop, ALICE)
    await shop.call("cancel_appointment", make_ctx(ALICE),
                    appointment_id=first.appointment.appointment_id)  # fmt: skip
    second = await book(shop, BOB)
    assert second.appointment.appointment_id != first.appointment.appointment_id
    assert [b.phone for b in await live_at(shop, "2026-03-09T09:00")] == [BOB]


async def test_reschedule_moves_the_appointment(make_shop: ShopFactory) -> None:
    shop = make_shop(bays=1)
    old = await book(shop, ALICE, "2026-03-09T09:00")
    old_id = old.appointment.appointment_id
    # 9:15 overlaps the appointment itself, which does not stand in its own way.
    moved = await shop.call("reschedule_appointment", make_ctx(ALICE, tool_call_id="tc-2"),
                            appointment_id=old_id, new_start="2026-03-09T09:15")  # fmt: skip
    assert moved.appointment.start == "2026-03-09T09:15-05:00"
    assert moved.appointment.appointment_id != old_id
    assert "now on Monday, March 9 at 9:15 AM" in moved.message
    listed = await shop.call("find_appointments", make_ctx(ALICE))
    assert [a.start for a in listed.appointments] == ["2026-03-09T09:15-05:00"]
    gone = await shop.store.get(old_id)
    assert gone is not None and gone.cancelled
    # The engine retries the same request: nothing changes.
    again = await shop.call("reschedule_appointment", make_ctx(ALICE),
                            appointment_id=old_id, new_start="2026-03-09T09:15")  # fmt: skip
    assert again.already_booked
    assert again.appointment.appointment_id == moved.appointment.appointment_id
    # Someone else's appointment cannot be moved; a taken time is refused with options.
    with pytest.raises(ToolError, match="isn't the number"):
        await shop.call("reschedule_appointment", make_ctx(BOB),
                        appointment_id=moved.appointment.appointment_id,
                        new_start="2026-03-09T13:00")  # fmt: skip
    await book(shop, BOB, "2026-03-09T13:00")
    with pytest.raises(ToolError, match=r"isn't available\. The nearest openings are"):
        await shop.call("reschedule_appointment", make_ctx(ALICE),
                        appointment_id=moved.appointment.appointment_id,
                        new_start="2026-03-09T13:00")  # fmt: skip
    assert len(await live_at(shop, "2026-03-09T09:00", minutes=300)) == 2


async def test_store_failure_is_voiced(make_shop: ShopFactory, tmp_path: Path) -> None:
    if make_shop.fake:
        shop = make_shop(api_endpoint="http://127.0.0.1:9/calendar/v3/")  # nothing listens
    elif make_shop.postgres_url:
        shop = make_shop()
        nobody = Storage("postgresql", url="postgresql://hookline@127.0.0.1:9/shop",
                         connect_timeout_s=1.0)  # fmt: skip
        shop.store.db = nobody.database(file=Path("unused"), schema=SCHEMA, provider="t")
    else:
        shop = make_shop()
        # A directory is no database.
        shop.store.db = Storage("duckdb").database(file=tmp_path, schema=SCHEMA, provider="t")
    with pytest.raises(ToolError, match="I can't reach the schedule right now"):
        await shop.call("check_availability", service="oil change")
    with pytest.raises(ToolError, match="can I take your number"):
        await book(shop)

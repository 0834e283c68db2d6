"""Tools that forgive the caller (issue 12 item 3): service wording matched loosely,
the vehicle structured and validated into sentences, and carried into both stores."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import msgspec
import pytest
import trio
from calendar_google_helpers import ALICE, SHOP, Shop, ShopFactory, make_ctx

from hookline.tools import ToolError
from hookline_calendar_google import CalendarSettings
from hookline_calendar_google.local_store import LocalStore
from hookline_calendar_google.services import ServiceMatcher
from hookline_calendar_google.vehicle import Vehicle, VehicleParams, validate_vehicle

SYNONYMS = {
    "transmission flush": "diagnostics",
    "check engine light": "diagnostics",
    "rotate the tires": "tire_rotation",  # a wording of the name is enough
    "emissions test": "state inspection",
}
OFFERED = "We offer: oil change, tire rotation, brakes, diagnostics, state inspection, alignment."


@pytest.mark.parametrize(
    ("said", "service"),
    [
        ("oil change", "oil change"),
        ("Oil Change", "oil change"),
        ("  OIL   CHANGE ", "oil change"),
        ("oil changes", "oil change"),
        ("an oil change", "oil change"),
        ("oil_change", "oil change"),
        ("oil", "oil change"),
        ("oil chnage", "oil change"),  # a typo
        ("brake", "brakes"),
        ("a brake job", "brakes"),
        ("Tire Rotations", "tire rotation"),
        ("state inspections", "state inspection"),
        ("transmission flush", "diagnostics"),  # synonyms from config
        ("Transmission Flushes", "diagnostics"),
        ("my check engine light", "diagnostics"),
        ("rotate the tires", "tire rotation"),
        ("emissions test", "state inspection"),
        ("wheel alignment", "alignment"),
    ],
)
def test_service_wording_is_matched_loosely(said: str, service: str) -> None:
    matcher = ServiceMatcher(list(SHOP["services"]), SYNONYMS)
    assert matcher.match(said) == service


@pytest.mark.parametrize("said", ["car wash", "transmission rebuild", "detailing", ""])
def test_an_unknown_service_lists_what_is_offered(said: str) -> None:
    matcher = ServiceMatcher(list(SHOP["services"]), SYNONYMS)
    with pytest.raises(ToolError) as info:
        matcher.match(said)
    assert str(info.value).endswith(OFFERED)


def test_a_wording_that_names_two_services_asks_which() -> None:
    matcher = ServiceMatcher(["brake inspection", "state inspection", "oil change"])
    with pytest.raises(ToolError, match="'inspection' could be brake inspection or state insp"):
        matcher.match("inspection")


def test_a_synonym_for_an_unknown_service_is_a_config_error() -> None:
    with pytest.raises(msgspec.ValidationError, match="'flush' points at 'transmission'"):
        msgspec.convert({**SHOP, "service_synonyms": {"flush": "transmission"}}, CalendarSettings)


async def test_the_tools_take_loose_wording_and_synonyms(make_shop: ShopFactory) -> None:
    shop = make_shop(service_synonyms={"transmission flush": "diagnostics"})
    check = shop.tools["check_availability"]
    # What used to reach the model as `Invalid enum value 'Oil Change' - at $.service`.
    for said, service in [("Oil Change", "oil change"), ("transmission flush", "diagnostics")]:
        result = await check.handler(check.decode(f'{{"service": "{said}"}}'), make_ctx())
        assert result.service == service
    with pytest.raises(ToolError) as info:
        await check.handler(check.decode('{"service": "car wash"}'), make_ctx())
    assert str(info.value) == f"We don't have a service called 'car wash'. {OFFERED}"


# ------------------------------------------------------------------ the vehicle


@pytest.mark.parametrize(
    ("given", "sentence"),
    [
        (VehicleParams(year=2018, make="Honda"), r"^I need the vehicle's model as well"),
        (VehicleParams(make="Honda", model="Civic"), r"^What year is the vehicle\?"),
        (VehicleParams(year="18", make="Honda", model="Civic"), r"should be four digits"),
        (VehicleParams(year=1850, make="Ford", model="T"), r"between 1900 and 2028"),
        (
            VehicleParams(year=2018, make="Honda", model="Civic", vin="1HGCM82633A00435"),
            r"^A VIN is 17 letters and digits without I, O or Q; that one has 16\.",
        ),
        (
            VehicleParams(year=2018, make="Honda", model="Civic", vin="1HGCM82633AO04352"),
            r"that one has an I, O or Q",
        ),
        (
            VehicleParams(year=2018, make="Honda", model="Civic", mileage="lots"),
            r"^The mileage 'lots' should be the odometer reading",
        ),
        (
            VehicleParams(year=2018, make="Honda", model="Civic", plate="!!"),
            r"^The plate '!!' should be up to 10",
        ),
        ("a van", r"^I need the vehicle's year, make and model \(e\.g\. 2018 Honda Civic\)"),
    ],
)
def test_vehicle_mistakes_are_sentences(given: VehicleParams | str, sentence: str) -> None:
    with pytest.raises(ToolError, match=sentence) as info:
        validate_vehicle(given, this_year=2026)
    text = str(info.value)
    assert text.endswith(".") and "\n" not in text and "$." not in text


def test_vehicle_values_are_normalized() -> None:
    given = VehicleParams(
        year="2019",
        make=" Toyota ",
        model="Camry",
        vin="1hgcm8-2633a 004352",
        plate="abc  123",
        mileage="45,000 miles",
    )
    assert validate_vehicle(given, this_year=2026) == Vehicle(
        year=2019, make="Toyota", model="Camry", vin="1HGCM82633A004352", plate="ABC 123",
        mileage=45000,
    )  # fmt: skip
    assert validate_vehicle(VehicleParams(year=2019, make="Kia", model="Soul", mileage="82k"),
                            this_year=2026).mileage == 82000  # fmt: skip
    assert validate_vehicle("2015 Ford F-150 XLT", this_year=2026) == Vehicle(
        year=2015, make="Ford", model="F-150 XLT"
    )


CAMRY = {
    "year": 2019,
    "make": "Toyota",
    "model": "Camry",
    "vin": "1HGCM82633A004352",
    "plate": "abc 123",
    "mileage": "45,000",
}
CAMRY_STORED = Vehicle(year=2019, make="Toyota", model="Camry", vin="1HGCM82633A004352",
                       plate="ABC 123", mileage=45000)  # fmt: skip


async def _book_camry(shop: Shop) -> object:
    return await shop.call(
        "book_appointment",
        make_ctx(ALICE, call_id="call-camry", tool_call_id="tc-camry"),
        service="Oil Changes",
        start="2026-03-09T09:00",
        customer_name="Pat Doe",
        vehicle=CAMRY,
    )


async def test_the_vehicle_is_carried_into_the_booking(shop: Shop) -> None:
    result = await _book_camry(shop)
    assert result.appointment.vehicle == "2019 Toyota Camry"  # type: ignore[attr-defined]
    assert result.appointment.vehicle_details == CAMRY_STORED  # type: ignore[attr-defined]
    stored = await shop.store.get(result.appointment.appointment_id)  # type: ignore[attr-defined]
    assert (stored.service, stored.vehicle, stored.vehicle_info) == (
        "oil change",
        "2019 Toyota Camry",
        CAMRY_STORED,
    )
    found = await shop.call("find_appointments", make_ctx(ALICE))
    assert found.appointments[0].vehicle_details == CAMRY_STORED
    # Moving the appointment keeps the vehicle.
    moved = await shop.call(
        "reschedule_appointment",
        make_ctx(ALICE, tool_call_id="tc-move"),
        appointment_id=result.appointment.appointment_id,  # type: ignore[attr-defined]
        new_start="2026-03-11T10:00",
    )
    assert moved.appointment.vehicle_details == CAMRY_STORED
    if shop.fake is not None:
        (event,) = shop.fake.live_events()
        private = event["extendedProperties"]["private"]
        assert {k: private[k] for k in ("vehicleYear", "vehicleMake", "vehicleModel", "vin",
                                       "plate", "mileage")} == {
            "vehicleYear": "2019", "vehicleMake": "Toyota", "vehicleModel": "Camry",
            "vin": "1HGCM82633A004352", "plate": "ABC 123", "mileage": "45000",
        }  # fmt: skip
        lines = event["description"].splitlines()
        assert "Vehicle: 2019 Toyota Camry" in lines
        assert "VIN: 1HGCM82633A004352" in lines
        assert "Plate: ABC 123" in lines and "Mileage: 45,000" in lines


async def test_a_bad_vin_books_nothing_and_says_why(shop: Shop) -> None:
    with pytest.raises(ToolError, match="A VIN is 17 letters and digits"):
        await shop.call(
            "book_appointment",
            make_ctx(ALICE),
            service="oil change",
            start="2026-03-09T09:00",
            customer_name="Pat",
            vehicle={**CAMRY, "vin": "IOQ"},
        )
    assert await shop.store.by_phone(ALICE, dt.datetime(2026, 3, 1, tzinfo=dt.UTC)) == []


async def test_a_database_from_before_structured_vehicles_opens(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    old = duckdb.connect(str(path))
    old.execute(
        "CREATE TABLE appointments (id VARCHAR PRIMARY KEY, start_at TIMESTAMPTZ NOT NULL, "
        "end_at TIMESTAMPTZ NOT NULL, bay INTEGER, service VARCHAR NOT NULL DEFAULT '', "
        "phone VARCHAR NOT NULL DEFAULT '', customer_name VARCHAR NOT NULL DEFAULT '', "
        "vehicle VARCHAR NOT NULL DEFAULT '', notes VARCHAR NOT NULL DEFAULT '', "
        "call_id VARCHAR NOT NULL DEFAULT '', request_id VARCHAR NOT NULL DEFAULT '', "
        "replaces VARCHAR NOT NULL DEFAULT '', status VARCHAR NOT NULL DEFAULT 'confirmed', "
        "created_at TIMESTAMPTZ NOT NULL, confirmation_code VARCHAR NOT NULL DEFAULT '')"
    )
    old.execute(
        "INSERT INTO appointments (id, start_at, end_at, bay, service, phone, vehicle, "
        "created_at, confirmation_code) VALUES ('oldbooking', "
        "TIMESTAMPTZ '2026-03-09 15:00:00+00', TIMESTAMPTZ '2026-03-09 15:30:00+00', 1, "
        "'oil change', '+13125550101', 'blue pickup', now(), '123456')"
    )
    old.close()
    store = LocalStore(path, trio.CapacityLimiter(2), bays=1)
    kept = await store.get("oldbooking")
    assert kept is not None
    assert (kept.vehicle, kept.vehicle_info, kept.confirmation_code) == (
        "blue pickup",
        Vehicle(),
        "123456",
    )
    start = dt.datetime(2026, 3, 9, 16, tzinfo=dt.UTC)
    from hookline_calendar_google.schedule import Booking

    new = Booking(
        id="newbooking",
        start=start,
        end=start + dt.timedelta(minutes=30),
        bay=1,
        service="oil change",
        vehicle="2019 Toyota Camry",
        vehicle_info=CAMRY_STORED,
    )
    assert await store.insert(new) is not None
    assert (await store.get("newbooking")).vehicle_info == CAMRY_STORED  # type: ignore[union-attr]
    await store.aclose()

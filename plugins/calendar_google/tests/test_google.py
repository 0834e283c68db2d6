"""The Google backend against the fake: auth, token refresh, rate limits, errors voiced,
and the wire shape of what it sends."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import msgspec
import pytest
from calendar_google_helpers import ALICE, SHOP, Clock, Shop, ShopFactory, make_ctx

from hookline.errors import ConfigError, MissingSecret, ProviderTimeout
from hookline.tools import ToolError
from hookline_calendar_google import CalendarSettings, create_scheduler
from hookline_calendar_google.tools import UNREACHABLE, build_tools
from hookline_testkit.fake_google_calendar import FakeGoogleCalendar


@pytest.fixture
async def factory(google_calendar_fake: FakeGoogleCalendar, tmp_path: Path) -> ShopFactory:
    return ShopFactory("google", google_calendar_fake, tmp_path / "unused.duckdb")


async def check(shop: Shop) -> object:
    return await shop.call("check_availability", service="oil change", earliest="2026-03-09")


async def book(shop: Shop, start: str = "2026-03-09T09:00") -> object:
    return await shop.call(
        "book_appointment",
        make_ctx(ALICE, call_id="call-42", tool_call_id="tc-7"),
        service="oil change",
        start=start,
        customer_name="Pat Doe",
        vehicle="2018 Honda Civic",
        notes="Check the wipers too",
    )


def statuses(fake: FakeGoogleCalendar) -> list[tuple[str, int]]:
    return [(r.method, r.status) for r in fake.requests]


async def test_token_refresh_after_401(factory: ShopFactory) -> None:
    fake = factory.fake
    assert fake is not None
    shop = factory()
    await check(shop)
    assert fake.tokens_issued == 1
    fake.fail(401)  # the access token stops working
    result = await check(shop)
    assert result.slots  # type: ignore[attr-defined]
    assert fake.tokens_issued == 2
    assert statuses(fake)[-3:] == [("GET", 401), ("POST", 200), ("GET", 200)]
    assert fake.requests[-2].path == "/token"
    form = fake.requests[-2].body.decode()
    assert "grant_type=refresh_token" in form and "refresh_token=test-refresh-token" in form


async def test_401_after_refresh_is_voiced(factory: ShopFactory) -> None:
    fake = factory.fake
    assert fake is not None
    shop = factory()
    await check(shop)
    fake.fail(401, count=2)  # refreshed once, still refused: give up
    with pytest.raises(ToolError) as e:
        await check(shop)
    assert str(e.value) == UNREACHABLE
    assert [s for _, s in statuses(fake)].count(401) == 2


async def test_revoked_refresh_token_is_voiced(factory: ShopFactory) -> None:
    fake = factory.fake
    assert fake is not None
    shop = factory(
        env={
            "GOOGLE_CLIENT_ID": fake.client_id,
            "GOOGLE_CLIENT_SECRET": fake.client_secret,
            "GOOGLE_REFRESH_TOKEN": "revoked",
        }
    )
    with pytest.raises(ToolError, match="can't reach the schedule"):
        await check(shop)
    assert statuses(fake) == [("POST", 400)]  # invalid_grant; no API call made


@pytest.mark.parametrize(
    ("status", "reason"), [(429, None), (403, "rateLimitExceeded"), (403, "userRateLimitExceeded")]
)
async def test_rate_limits_back_off_and_succeed(
    factory: ShopFactory, status: int, reason: str | None
) -> None:
    fake = factory.fake
    assert fake is not None
    shop = factory()
    await check(shop)
    fake.fail(status, count=2, reason=reason)
    assert (await book(shop)).booked  # type: ignore[attr-defined]
    assert [s for _, s in statuses(fake)].count(status) == 2
    assert len(fake.live_events()) == 1


async def test_retry_after_is_honoured_within_the_cap(factory: ShopFactory) -> None:
    fake = factory.fake
    assert fake is not None
    shop = factory(rate_limit_backoff_s=0.0, backoff_max_s=0.2)
    await check(shop)
    fake.fail(429, retry_after=0.15)
    start = dt.datetime.now()
    await check(shop)
    assert (dt.datetime.now() - start).total_seconds() >= 0.15


async def test_rate_limit_gives_up_after_the_bound(factory: ShopFactory) -> None:
    fake = factory.fake
    assert fake is not None
    shop = factory(rate_limit_retries=2)
    await check(shop)
    before = len(fake.requests)
    fake.fail(429, count=5)
    with pytest.raises(ToolError) as e:
        await check(shop)
    assert str(e.value) == UNREACHABLE
    assert len(fake.requests) - before == 3  # one try and two retries


@pytest.mark.parametrize(
    ("status", "reason"),
    [(500, None), (503, None), (403, "forbiddenForNonOrganizer"), (404, None), (400, "invalid")],
)
async def test_other_errors_are_voiced_without_retry(
    factory: ShopFactory, status: int, reason: str | None
) -> None:
    fake = factory.fake
    assert fake is not None
    shop = factory()
    await check(shop)
    before = len(fake.requests)
    fake.fail(status, reason=reason)
    with pytest.raises(ToolError) as e:
        await book(shop)
    assert str(e.value) == UNREACHABLE
    assert len(fake.requests) - before == 1
    assert fake.live_events() == []


async def test_a_slow_api_is_voiced(factory: ShopFactory) -> None:
    fake = factory.fake
    assert fake is not None
    shop = factory(request_timeout_s=0.2)
    await check(shop)
    fake.latency_s = 1.0
    with pytest.raises(ToolError) as e:
        await check(shop)
    assert str(e.value) == UNREACHABLE
    assert isinstance(e.value.__cause__, ProviderTimeout)


async def test_insert_failure_after_read_is_voiced_and_books_nothing(factory: ShopFactory) -> None:
    fake = factory.fake
    assert fake is not None
    shop = factory()
    fake.fail(500, method="POST", path_contains="/events")
    with pytest.raises(ToolError, match="can I take your number"):
        await book(shop)
    assert fake.live_events() == []
    assert (await book(shop)).booked  # type: ignore[attr-defined]


async def test_the_event_google_receives(factory: ShopFactory) -> None:
    fake = factory.fake
    assert fake is not None
    shop = factory()
    result = await book(shop)
    (insert,) = fake.api_requests("POST")
    assert insert.path == "/calendar/v3/calendars/primary/events"
    assert insert.query["sendUpdates"] == ["none"]
    assert insert.headers["authorization"] == "Bearer ya29.fake-1"
    (event,) = fake.live_events()
    assert event["id"] == result.appointment.appointment_id  # type: ignore[attr-defined]
    code = event["extendedProperties"]["private"].pop("code")
    assert len(code) == 6 and code.isdigit()  # the confirmation code rides along
    assert event["extendedProperties"]["private"] == {
        "hookline": "1",
        "phone": ALICE,
        "service": "oil change",
        "customer": "Pat Doe",
        "vehicle": "2018 Honda Civic",
        "vehicleYear": "2018",  # the free text, read as year, make and model
        "vehicleMake": "Honda",
        "vehicleModel": "Civic",
        "callId": "call-42",
        "requestId": "tc-7",
        "bay": "1",
    }
    assert event["summary"] == "Oil change: Pat Doe"
    assert "Notes: Check the wipers too" in event["description"]
    assert event["end"] == {"dateTime": "2026-03-09T09:30:00-05:00", "timeZone": "America/Chicago"}
    # Finding uses the private-property filter.
    await shop.call("find_appointments", make_ctx(ALICE))
    find = fake.api_requests("GET")[-1]
    assert find.query["privateExtendedProperty"] == ["hookline=1", f"phone={ALICE}"]
    assert find.query["singleEvents"] == ["true"] and find.query["orderBy"] == ["startTime"]


async def test_events_typed_in_by_hand(factory: ShopFactory) -> None:
    fake = factory.fake
    assert fake is not None
    fake.time_zone = "America/Chicago"
    shop = factory(bays=1)
    fake.add_event(summary="Lunch", start={"dateTime": "2026-03-09T12:00:00-05:00"},
                   end={"dateTime": "2026-03-09T13:00:00-05:00"})  # fmt: skip
    fake.add_event(summary="Reminder", transparency="transparent",
                   start={"dateTime": "2026-03-09T07:30:00-05:00"},
                   end={"dateTime": "2026-03-09T09:00:00-05:00"})  # fmt: skip
    fake.add_event(summary="Shop closed", start={"date": "2026-03-11"}, end={"date": "2026-03-12"})
    result = await shop.call(
        "check_availability", service="diagnostics", earliest="2026-03-09T11:00"
    )
    starts = [s.start for s in result.slots]
    assert starts[:5] == ["2026-03-09T11:00-05:00", "2026-03-09T13:00-05:00",
                          "2026-03-09T13:15-05:00", "2026-03-09T13:30-05:00",
                          "2026-03-09T13:45-05:00"]  # fmt: skip
    # A transparent event blocks nothing; an all-day one blocks its day.
    morning = await shop.call("check_availability", service="oil change", earliest="2026-03-09")
    assert morning.slots[0].start == "2026-03-09T07:30-05:00"
    wednesday = await shop.call("check_availability", service="oil change", earliest="2026-03-11")
    assert wednesday.slots[0].start == "2026-03-12T07:30-05:00"
    # The caller's search ignores events the agent did not make.
    mine = await shop.call("find_appointments", make_ctx(ALICE))
    assert mine.appointments == []


async def test_listing_follows_pages(factory: ShopFactory) -> None:
    fake = factory.fake
    assert fake is not None
    fake.page_size_cap = 2
    shop = factory(bays=1)
    for hour in range(8, 13):
        fake.add_event(summary=f"Job {hour}",
                       start={"dateTime": f"2026-03-09T{hour:02d}:00:00-05:00"},
                       end={"dateTime": f"2026-03-09T{hour + 1:02d}:00:00-05:00"})  # fmt: skip
    result = await shop.call(
        "check_availability", service="oil change", earliest="2026-03-09T07:45"
    )
    assert result.slots[0].start == "2026-03-09T13:00-05:00"
    tokens = [r.query.get("pageToken") for r in fake.api_requests("GET")]
    assert tokens[:3] == [None, ["2"], ["4"]]


async def test_service_account(google_calendar_fake: FakeGoogleCalendar, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    fake = google_calendar_fake
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    email = "scheduler@shop-project.iam.gserviceaccount.com"
    fake.service_accounts[email] = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    key_file = tmp_path / "sa.json"
    key_file.write_text(json.dumps({
        "type": "service_account", "project_id": "shop-project", "private_key_id": "k1",
        "private_key": pem, "client_email": email, "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }))  # fmt: skip
    settings = msgspec.convert(
        {**SHOP, "service_account_file_env": "SA_FILE", "api_endpoint": fake.api_endpoint,
         "token_uri": fake.token_uri},
        CalendarSettings,
    )  # fmt: skip
    assert settings.refresh_token_env == ""  # not asked for by `hookline check`
    scheduler = create_scheduler(
        settings,
        default_timezone="UTC",
        limiter=__import__("trio").CapacityLimiter(4),
        secret=lambda env, key: {"SA_FILE": str(key_file)}[env],
        resolve_path=Path,
        clock=Clock(),
    )
    shop = Shop("google", scheduler, {t.name: t for t in build_tools(scheduler)}, Clock(), fake)
    assert (await book(shop)).booked  # type: ignore[attr-defined]
    token = fake.requests[0]
    assert token.path == "/token"
    assert b"jwt-bearer" in token.body
    claims = token.body.decode().split("assertion=")[1].split(".")[1]
    # stdlib json on purpose: an independent decoder checks what google-auth signed.
    payload = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    assert payload["iss"] == email and payload["aud"] == "https://oauth2.googleapis.com/token"


async def test_missing_secrets_and_key_file_are_clear_errors(tmp_path: Path) -> None:
    from hookline.config import Secrets

    settings = msgspec.convert(dict(SHOP), CalendarSettings)
    secrets = Secrets({})
    with pytest.raises(MissingSecret, match="GOOGLE_REFRESH_TOKEN"):
        create_scheduler(
            settings,
            default_timezone="UTC",
            limiter=__import__("trio").CapacityLimiter(4),
            secret=lambda env, key: secrets.get(env, key=f"tools.calendar_google.{key}"),
            resolve_path=Path,
        )
    sa = msgspec.convert({**SHOP, "service_account_file_env": "SA_FILE"}, CalendarSettings)
    with pytest.raises(ConfigError, match="cannot read the service-account key file"):
        create_scheduler(
            sa,
            default_timezone="UTC",
            limiter=__import__("trio").CapacityLimiter(4),
            secret=lambda env, key: str(tmp_path / "missing.json"),
            resolve_path=Path,
        )

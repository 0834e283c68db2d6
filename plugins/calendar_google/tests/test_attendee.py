"""A caller who gives an email is invited: the Google event has them as an attendee and
is created with sendUpdates="all", so Google emails the invitation; without an email
nobody is emailed (sendUpdates="none")."""

from __future__ import annotations

import pytest
from calendar_google_helpers import ShopFactory, local

from hookline import ToolError
from hookline_testkit.fake_google_calendar import fake_google_calendar


def _inserts(fake):
    return [r for r in fake.api_requests("POST") if r.path.endswith("/events")]


async def test_an_email_invites_the_caller(tmp_path):
    async with fake_google_calendar() as fake:
        shop = ShopFactory("google", fake, tmp_path / "unused.duckdb")()
        start = local("2026-03-09T09:00").isoformat()
        booked = await shop.call(
            "book_appointment",
            service="oil change",
            start=start,
            customer_name="Sam Rivera",
            vehicle="2018 Honda Civic",
            email="sam@example.com",
        )
        assert booked.booked
        (insert,) = _inserts(fake)
        assert insert.query["sendUpdates"] == ["all"]
        event = fake.events["primary"][booked.appointment.appointment_id]
        assert [a["email"] for a in event["attendees"]] == ["sam@example.com"]
        stored = await shop.store.get(booked.appointment.appointment_id)
        assert stored is not None and stored.email == "sam@example.com"

        plain = await shop.call(
            "book_appointment",
            service="oil change",
            start=local("2026-03-09T11:00").isoformat(),
            customer_name="Alex Kim",
            vehicle="2020 Toyota Camry",
        )
        assert plain.booked
        assert _inserts(fake)[-1].query["sendUpdates"] == ["none"]


async def test_a_malformed_email_is_asked_again(tmp_path):
    async with fake_google_calendar() as fake:
        shop = ShopFactory("google", fake, tmp_path / "unused.duckdb")()
        with pytest.raises(ToolError, match="doesn't look like an email address"):
            await shop.call(
                "book_appointment",
                service="oil change",
                start=local("2026-03-09T09:00").isoformat(),
                customer_name="Sam Rivera",
                vehicle="2018 Honda Civic",
                email="sam at example",
            )
        assert _inserts(fake) == []

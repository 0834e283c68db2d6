"""pytest fixtures for the fake Google Calendar (imported into hookline's pytest plugin)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .fake_google_calendar import FakeGoogleCalendar, fake_google_calendar

__all__ = ["google_calendar_fake"]


@pytest.fixture
async def google_calendar_fake() -> AsyncIterator[FakeGoogleCalendar]:
    """A fake Google Calendar API and OAuth token endpoint on loopback.

    Point the client at `google_calendar_fake.api_endpoint` and `.token_uri`; it accepts
    `.client_id`, `.client_secret` and `.refresh_token`. Inject failures with
    `.fail(status, ...)` / `.revoke_tokens()`; read `.requests` and `.live_events()`."""
    async with fake_google_calendar() as fake:
        yield fake

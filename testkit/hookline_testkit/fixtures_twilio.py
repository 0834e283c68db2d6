"""pytest fixtures for the Twilio simulator and REST fake (imported by the pytest plugin).

async def test_x(twilio_rest, twilio_sim): ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .twilio_sim import DEFAULT_ACCOUNT_SID, TwilioRestFake, TwilioSimulator, twilio_rest_fake

__all__ = ["twilio_auth_token", "twilio_rest", "twilio_secrets", "twilio_sim"]

TEST_AUTH_TOKEN = "test-auth-token-0123456789abcdef"


@pytest.fixture
def twilio_auth_token() -> str:
    return TEST_AUTH_TOKEN


@pytest.fixture
def twilio_secrets(twilio_auth_token: str) -> dict[str, str]:
    """The environment a Twilio provider reads its secrets from (for `Secrets(...)`)."""
    return {"TWILIO_AUTH_TOKEN": twilio_auth_token, "TWILIO_ACCOUNT_SID": DEFAULT_ACCOUNT_SID}


@pytest.fixture
async def twilio_rest(twilio_auth_token: str) -> AsyncIterator[TwilioRestFake]:
    async with twilio_rest_fake(auth_token=twilio_auth_token) as fake:
        yield fake


@pytest.fixture
async def twilio_sim(twilio_auth_token: str, twilio_rest: TwilioRestFake) -> TwilioSimulator:
    return TwilioSimulator(auth_token=twilio_auth_token, rest=twilio_rest)

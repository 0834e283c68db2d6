"""pytest fixtures for the fake OpenAI server (imported into hookline's pytest plugin)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .fake_openai import FakeOpenAI, fake_openai

__all__ = ["openai_fake"]


@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeOpenAI]:
    """A fake OpenAI server on loopback: `openai_fake.url` is its base URL ("/v1"),
    `openai_fake.api_key` the only key it accepts; script it with `openai_fake.script(...)`."""
    async with fake_openai() as fake:
        yield fake

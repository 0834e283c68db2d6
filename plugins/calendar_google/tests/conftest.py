"""Fixtures: a shop on each backend (the Google fake; the local store on a DuckDB file
and on a real PostgreSQL server)."""

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

# Test modules share calendar_google_helpers.py (uniquely named: --import-mode=importlib
# puts no test directory on sys.path, and other plugins' helpers must not shadow it).
sys.path.insert(0, str(Path(__file__).parent))

from calendar_google_helpers import Shop, ShopFactory

from hookline_testkit.fake_google_calendar import fake_google_calendar
from hookline_testkit.fixtures_calendar import google_calendar_fake  # noqa: F401


@pytest.fixture(params=["google", "local", "local-postgresql"])
async def make_shop(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ShopFactory]:
    """Build shops (each one is like a separate process) on the parametrized backend."""
    if request.param == "google":
        async with fake_google_calendar() as fake:
            factory = ShopFactory("google", fake, tmp_path / "unused.duckdb")
            yield factory
        return
    url = request.getfixturevalue("postgres_url") if request.param == "local-postgresql" else ""
    factory = ShopFactory("local", None, tmp_path / "calendar.duckdb", postgres_url=url)
    yield factory
    for shop in factory.built:
        await shop.store.aclose()
    factory.close()


@pytest.fixture
async def shop(make_shop: ShopFactory) -> Shop:
    return make_shop()

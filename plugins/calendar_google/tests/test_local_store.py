"""The local store on both engines: the database itself keeps two overlapping bookings
off one bay, whichever process writes them (no re-check by the tools involved)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from hookline import Storage
from hookline_calendar_google.local_store import PROVIDER, SCHEMA, LocalStore
from hookline_calendar_google.schedule import Booking
from hookline_calendar_google.store import SlotTaken

NINE = dt.datetime(2026, 3, 9, 15, tzinfo=dt.UTC)


def _job(id: str, start: dt.datetime, bay: int = 1, replaces: str = "") -> Booking:
    return Booking(id=id, start=start, end=start + dt.timedelta(hours=1), bay=bay,
                   service="diagnostics", replaces=replaces)  # fmt: skip


@pytest.fixture(params=["duckdb", "postgresql"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[LocalStore]]:
    """Two stores on one table, each with its own Storage (as two processes have)."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else ""
    storages = [Storage(request.param, url=url, limiter=trio.CapacityLimiter(4)) for _ in "ab"]
    made = [
        LocalStore(
            s.database(file=tmp_path / "shop.duckdb", schema=SCHEMA, provider=PROVIDER), bays=1
        )
        for s in storages
    ]
    yield made
    for s in storages:
        s.close()


async def test_two_stores_writing_at_once_never_share_a_bay(stores: list[LocalStore]) -> None:
    # Both transactions are held open past each other's insert: without the lock both
    # would see the bay free (neither sees the other's uncommitted row) and both commit.
    inside = threading.Barrier(2, timeout=0.5)

    def overlap() -> None:
        try:
            inside.wait()  # the other writer is in its transaction too (or waits the lock)
        except threading.BrokenBarrierError:
            pass  # it waits on the lock: what the test is about
        time.sleep(0.1)

    for store in stores:
        store.before_insert = overlap
    outcomes: list[object] = []

    async def book(store: LocalStore, booking: Booking) -> None:
        try:
            outcomes.append(await store.insert(booking))
        except SlotTaken as e:
            outcomes.append(e)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(book, stores[0], _job("a", NINE))
        nursery.start_soon(book, stores[1], _job("b", NINE + dt.timedelta(minutes=30)))
    assert sum(isinstance(o, Booking) for o in outcomes) == 1, outcomes
    assert sum(isinstance(o, SlotTaken) for o in outcomes) == 1, outcomes
    live = await stores[1].bookings(NINE, NINE + dt.timedelta(hours=2))
    assert len(live) == 1
    # Each store sees what the other wrote (one table), and refuses a repeated id.
    assert await stores[0].insert(_job(live[0].id, live[0].start)) is None


async def test_a_replacement_may_overlap_the_booking_it_replaces(
    stores: list[LocalStore],
) -> None:
    first, second = stores
    assert await first.insert(_job("first", NINE)) is not None
    with pytest.raises(SlotTaken):
        await second.insert(_job("other", NINE + dt.timedelta(minutes=15)))
    moved = await second.insert(_job("moved", NINE + dt.timedelta(minutes=15), replaces="first"))
    assert moved is not None and moved.created is not None
    assert await first.cancel("first") and not await second.cancel("first")
    (live,) = await first.bookings(NINE, NINE + dt.timedelta(hours=2))
    assert live.id == "moved" and (await second.get("first")).cancelled  # type: ignore[union-attr]
    assert first.upcoming_sync(NINE) == [live]

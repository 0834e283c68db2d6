"""The outbox itself, on each `[storage]` engine: idempotent enqueue, nothing stored
without a channel, opt-outs checked at enqueue and again at send, a bug in a channel
recorded, not retried; several senders (as several processes run) never deliver one
notification twice."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from hookline import Notification, ProviderUnavailable, Storage
from hookline.outbox import Outbox, OutboxStore, notification_id
from hookline.outbox.store import SCHEMA
from hookline.retry import Backoff

StoreFactory = Callable[[], OutboxStore]


@pytest.fixture(params=["duckdb", "postgresql"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Makes OutboxStores over one set of rows, each with its own Storage (its own
    connection pool), as separate processes have them."""
    made: list[Storage] = []
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else ""

    def make() -> OutboxStore:
        storage = Storage(request.param, url=url, pool_size=4)
        made.append(storage)
        db = storage.database(file=tmp_path / "outbox.duckdb", schema=SCHEMA, provider="outbox")
        return OutboxStore(db)

    yield make
    for storage in made:
        storage.close()


@pytest.fixture
def store(stores: StoreFactory) -> OutboxStore:
    return stores()


class Recorder:
    """A channel that keeps what it is given (a receiver that never fails)."""

    def __init__(self, fail: list[Exception] | None = None) -> None:
        self.sent: list[Notification] = []
        self.fail = fail or []

    async def send(self, notification: Notification) -> None:
        if self.fail:
            raise self.fail.pop(0)
        self.sent.append(notification)


def _outbox(store: OutboxStore, channel: Recorder) -> Outbox:
    outbox = Outbox(
        store,
        backoff=Backoff(first_s=0.01, max_s=0.02, attempts=3),
        poll_s=0.05,
    )
    outbox.add_channel("sms", channel)
    return outbox


async def test_same_key_is_one_notification(store):
    channel = Recorder()
    outbox = _outbox(store, channel)
    first = await outbox.enqueue(
        key="booking:B1:booked", channel="sms", to="+13125550101", body="a"
    )
    again = await outbox.enqueue(
        key="booking:B1:booked", channel="sms", to="+13125550101", body="b"
    )
    assert first is not None and first == again
    await outbox.deliver_due()
    await outbox.deliver_due()
    assert [n.body for n in channel.sent] == ["a"] and channel.sent[0].id == first


async def test_no_channel_no_row(store):
    outbox = _outbox(store, Recorder())
    assert await outbox.enqueue(key="k", channel="webhook", body="x") is None
    assert store.recent_sync() == []
    assert await Outbox.disabled().enqueue(key="k", channel="sms", body="x") is None


async def test_opt_out_checked_at_enqueue_and_at_send(store):
    channel = Recorder()
    outbox = _outbox(store, channel)
    queued = await outbox.enqueue(key="k1", channel="sms", to="+13125550101", body="x")
    await outbox.set_opt_out("sms", "+13125550101", True)  # STOP arrives before the send
    assert await outbox.enqueue(key="k2", channel="sms", to="+13125550101", body="y") is None
    await outbox.deliver_due()
    assert channel.sent == []
    row = store.get_sync(queued or "")
    assert row is not None and row.status == "skipped"


async def test_retryable_then_sent_and_a_broken_channel_fails_alone(store):
    channel = Recorder(fail=[ProviderUnavailable("503", provider="t")])
    outbox = _outbox(store, channel)
    broken = Recorder(fail=[RuntimeError("bug")])
    outbox.add_channel("broken", broken)
    good = await outbox.enqueue(key="g", channel="sms", to="+13125550101", body="x")
    bad = await outbox.enqueue(key="b", channel="broken", body="y")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(outbox.run)
        with trio.fail_after(20):
            while True:
                rows = {n.id: n for n in store.recent_sync()}
                if all(n.status != "pending" for n in rows.values()):
                    break
                await trio.sleep(0.02)
        nursery.cancel_scope.cancel()
    assert (rows[good or ""].status, rows[good or ""].attempts) == ("sent", 2)
    assert (rows[bad or ""].status, rows[bad or ""].attempts) == ("failed", 1)
    assert "RuntimeError: bug" in rows[bad or ""].last_error
    assert len(channel.sent) == 1


def _enqueue_many(store: OutboxStore, count: int) -> list[str]:
    ids = [notification_id(f"race:{i}") for i in range(count)]
    for i, id_ in enumerate(ids):
        store.add_sync(Notification(id=id_, key=f"race:{i}", channel="sms", body=str(i)))
    return ids


def test_two_senders_racing_to_claim_never_take_one_row(stores: StoreFactory) -> None:
    """Two stores over the same rows, each with its own pool (two processes), claiming
    small batches from two threads at once: every row is claimed once, none twice."""
    ids = _enqueue_many(stores(), 60)
    first, second = stores(), stores()
    claimed: dict[str, list[str]] = {"first": [], "second": []}
    start = threading.Barrier(2)

    def claim_all(name: str, store: OutboxStore) -> None:
        store.recent_sync(1)  # connected (its pool open) before the race starts
        start.wait()
        while batch := store.claim_due_sync(["sms"], 3, lease_s=600):
            claimed[name] += [n.id for n in batch]

    threads = [
        threading.Thread(target=claim_all, args=("first", first)),
        threading.Thread(target=claim_all, args=("second", second)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    both = claimed["first"] + claimed["second"]
    assert sorted(both) == sorted(ids)  # each once: none lost, none taken twice
    assert claimed["first"] and claimed["second"]  # both really took part
    # Claimed rows stay pending (delivery has not happened) but are nobody's to take.
    assert first.claim_due_sync(["sms"], 100, lease_s=600) == []
    assert {n.status for n in first.recent_sync(100)} == {"pending"}


async def test_two_running_senders_deliver_each_notification_once(stores: StoreFactory):
    """Two outboxes (two processes' senders) over one set of rows, both running: every
    notification reaches a channel exactly once."""
    ids = _enqueue_many(stores(), 30)
    channels = [Recorder(), Recorder()]
    outboxes = [_outbox(stores(), channel) for channel in channels]
    for outbox in outboxes:
        outbox.batch = 4
    async with trio.open_nursery() as nursery:
        for outbox in outboxes:
            nursery.start_soon(outbox.run)
        with trio.fail_after(60):
            while True:
                if sum(len(c.sent) for c in channels) >= len(ids):
                    break
                await trio.sleep(0.02)
        await trio.sleep(0.3)  # time for a wrong second delivery
        nursery.cancel_scope.cancel()
    sent = [n.id for c in channels for n in c.sent]
    assert sorted(sent) == sorted(ids)
    rows = outboxes[0].store.recent_sync(100) if outboxes[0].store else []
    assert {n.status for n in rows} == {"sent"}

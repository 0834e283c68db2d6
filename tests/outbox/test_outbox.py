"""The outbox itself: idempotent enqueue, nothing stored without a channel, opt-outs
checked at enqueue and again at send, a bug in a channel recorded, not retried."""

from __future__ import annotations

import trio

from hookline import Notification, ProviderUnavailable
from hookline.outbox import Outbox, OutboxStore
from hookline.retry import Backoff


class Recorder:
    """A channel that keeps what it is given (a receiver that never fails)."""

    def __init__(self, fail: list[Exception] | None = None) -> None:
        self.sent: list[Notification] = []
        self.fail = fail or []

    async def send(self, notification: Notification) -> None:
        if self.fail:
            raise self.fail.pop(0)
        self.sent.append(notification)


def _outbox(tmp_path, channel: Recorder) -> Outbox:
    outbox = Outbox(
        OutboxStore(tmp_path / "outbox.duckdb"),
        backoff=Backoff(first_s=0.01, max_s=0.02, attempts=3),
        poll_s=0.05,
    )
    outbox.add_channel("sms", channel)
    return outbox


async def test_same_key_is_one_notification(tmp_path):
    channel = Recorder()
    outbox = _outbox(tmp_path, channel)
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


async def test_no_channel_no_row(tmp_path):
    outbox = _outbox(tmp_path, Recorder())
    assert await outbox.enqueue(key="k", channel="webhook", body="x") is None
    assert OutboxStore(tmp_path / "outbox.duckdb").recent_sync() == []
    assert await Outbox.disabled().enqueue(key="k", channel="sms", body="x") is None


async def test_opt_out_checked_at_enqueue_and_at_send(tmp_path):
    channel = Recorder()
    outbox = _outbox(tmp_path, channel)
    queued = await outbox.enqueue(key="k1", channel="sms", to="+13125550101", body="x")
    await outbox.set_opt_out("sms", "+13125550101", True)  # STOP arrives before the send
    assert await outbox.enqueue(key="k2", channel="sms", to="+13125550101", body="y") is None
    await outbox.deliver_due()
    assert channel.sent == []
    row = OutboxStore(tmp_path / "outbox.duckdb").get_sync(queued or "")
    assert row is not None and row.status == "skipped"


async def test_retryable_then_sent_and_a_broken_channel_fails_alone(tmp_path):
    channel = Recorder(fail=[ProviderUnavailable("503", provider="t")])
    outbox = _outbox(tmp_path, channel)
    broken = Recorder(fail=[RuntimeError("bug")])
    outbox.add_channel("broken", broken)
    good = await outbox.enqueue(key="g", channel="sms", to="+13125550101", body="x")
    bad = await outbox.enqueue(key="b", channel="broken", body="y")
    store = OutboxStore(tmp_path / "outbox.duckdb")
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

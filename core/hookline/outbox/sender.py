"""The outbox: tools enqueue notifications, a background task delivers them.

`enqueue` commits the notification to the store and wakes the sender; nothing is sent
from the caller's task, so a slow or failing channel never holds a call. The sender
(`Outbox.run`, started by the server next to the HTTP listener) takes due notifications
oldest first, a few at a time, each in its own task with a time limit: one failing
notification is recorded and retried on its own, it never touches the others.

Retries are persisted, not slept in memory: a retryable failure writes the next attempt's
time (from the `Backoff` of `[outbox]`, or the channel's Retry-After), so a restarted
process picks up where the last one stopped. After `max_attempts` tries, or at once for
an error that is not retryable, the notification is `failed` with its last error.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from ..errors import ProviderError
from ..retry import Backoff
from .channel import Channel
from .store import Notification, OutboxStore, notification_id

__all__ = ["Outbox"]

log = logging.getLogger("hookline.outbox")

# `[outbox]`'s defaults: 5 s, doubling to 10 min, 8 tries (about 21 minutes in all).
DEFAULT_BACKOFF = Backoff(first_s=5.0, max_s=600.0, attempts=8, jitter=0.2)


class Outbox:
    """The enqueue side (for tools, through `ProviderContext.outbox`) and the sender.

    `store` is None for an outbox with no channels configured: `enqueue` then records
    nothing and returns None."""

    def __init__(
        self,
        store: OutboxStore | None,
        *,
        backoff: Backoff = DEFAULT_BACKOFF,
        send_timeout_s: float = 15.0,
        poll_s: float = 30.0,
        concurrency: int = 4,
        batch: int = 50,
    ) -> None:
        self.store = store
        self.backoff = backoff
        self.send_timeout_s = send_timeout_s
        self.poll_s = poll_s
        self.batch = batch
        self._channels: dict[str, Channel] = {}
        self._slots = trio.Semaphore(concurrency)
        self._wake = trio.Event()
        self._in_flight: set[str] = set()
        # Notifications per status as of the sender's last look (the store's, so with
        # PostgreSQL every process's): what /metrics reports, read at each scrape.
        self.counts: dict[str, int] = {}
        # How long a claimed notification stays this sender's (see OutboxStore): longer
        # than one attempt (the send, bounded by `send_timeout_s`, and its two writes).
        self.lease_s = 2 * send_timeout_s + 10.0

    @classmethod
    def disabled(cls) -> Outbox:
        return cls(None)

    def add_channel(self, name: str, channel: Channel) -> None:
        self._channels[name] = channel

    @property
    def channels(self) -> Mapping[str, Channel]:
        """The configured channels by name (`[notifications.<name>]`)."""
        return dict(self._channels)

    @property
    def database(self) -> Path | None:
        """The outbox's DuckDB file (None without a store, or in PostgreSQL)."""
        return self.store.path if self.store is not None else None

    # -------------------------------------------------------------- enqueue

    async def enqueue(
        self,
        *,
        key: str,
        channel: str,
        to: str = "",
        body: str = "",
        payload: Mapping[str, Any] | None = None,
        kind: str = "",
        call_id: str = "",
    ) -> str | None:
        """Write a notification for delivery; returns its id once committed.

        `key` makes it idempotent ("booking:<id>:confirmation"): enqueuing the same key
        again is a no-op returning the same id. None (nothing stored) when `channel` is
        not configured, or `to` opted out of it. Raises ProviderUnavailable when the
        store cannot be written; the caller decides whether that matters to the call."""
        if channel not in self._channels or self.store is None:
            log.info("no [notifications.%s] configured: %s not sent", channel, kind or key)
            return None
        n = Notification(
            id=notification_id(key),
            key=key,
            channel=channel,
            to=to,
            body=body,
            kind=kind,
            payload=dict(payload or {}),
            call_id=call_id,
        )
        added = await self.store.run(self.store.add_sync, n)
        if added is None:
            log.info("%s opted out of %s: %s not sent", _mask(to), channel, kind or key)
            return None
        stored, new = added
        if new:
            self._wake.set()
        return stored.id

    async def requeue(self, notification_id: str) -> Notification | None:
        """Make a notification pending again, due now (a person asked: the dashboard's
        retry); the sender takes it at once. None when there is no such id."""
        if self.store is None:
            return None
        requeued = await self.store.run(self.store.requeue_sync, notification_id)
        if requeued is not None:
            self._wake.set()
        return requeued

    async def set_opt_out(self, channel: str, address: str, opted_out: bool) -> None:
        """Record that `address` asked for no more (True) or again (False) messages on
        `channel` (an SMS STOP or START reply). Checked at enqueue and before each send."""
        if self.store is not None:
            await self.store.run(self.store.set_opt_out_sync, channel, address, opted_out)

    async def opted_out(self, channel: str, address: str) -> bool:
        if self.store is None:
            return False
        return bool(await self.store.run(self.store.opted_out_sync, channel, address))

    # -------------------------------------------------------------- the sender

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver due notifications until cancelled (runs for the life of the server).
        Pending ones from an earlier process are due at once (one it had claimed when it
        stopped, once that claim's lease ends)."""
        task_status.started()
        if self.store is None or not self._channels:
            await trio.sleep_forever()
        async with trio.open_nursery() as nursery:
            while True:
                self._wake = trio.Event()
                try:
                    await self._start_due(nursery)
                    wait = await self._until_next_due()
                    self.counts = await self.store.run(self.store.counts_sync)
                except ProviderError as e:  # the store is unreadable: try again later
                    log.warning("outbox unavailable: %s", e)
                    wait = self.poll_s
                with trio.move_on_after(wait):
                    await self._wake.wait()

    async def deliver_due(self) -> None:
        """One pass: deliver what is due now and wait for those deliveries (tests, CLI)."""
        async with trio.open_nursery() as nursery:
            await self._start_due(nursery)

    async def _start_due(self, nursery: trio.Nursery) -> None:
        assert self.store is not None
        # Claimed, not just read: no other sender (this process's next look, another
        # process, another machine) takes these until their outcome is written.
        due = await self.store.run(
            self.store.claim_due_sync, list(self._channels), self.batch, self.lease_s
        )
        for n in due:
            if n.id not in self._in_flight:
                self._in_flight.add(n.id)
                await self._slots.acquire()
                nursery.start_soon(self._deliver, n)

    async def _until_next_due(self) -> float:
        assert self.store is not None
        when = await self.store.run(self.store.next_due_sync, list(self._channels))
        if when is None:
            return self.poll_s
        seconds = (when - self.store.clock()).total_seconds()
        return min(self.poll_s, max(seconds, 0.01))

    async def _deliver(self, n: Notification) -> None:
        assert self.store is not None
        store = self.store
        try:
            if n.to and await store.run(store.opted_out_sync, n.channel, n.to):
                log.info("notification %s skipped: %s opted out", n.id, _mask(n.to))
                await self._record(n, "skipped", "recipient opted out")
                return
            error = await self._attempt(n)
            if error is None:
                await self._record(n, "sent")
                log.info("notification %s (%s) sent by %s", n.id, n.kind or n.key, n.channel)
                return
            attempt = n.attempts + 1
            spent = self.backoff.attempts is not None and attempt >= self.backoff.attempts
            if error.retryable and not spent:
                wait = self.backoff.delay(attempt, error.retry_after)
                next_at = store.clock() + dt.timedelta(seconds=wait)
                log.warning(
                    "notification %s: attempt %d failed (%s); next in %.1f s",
                    n.id, attempt, error, wait,
                )  # fmt: skip
                await self._record(n, "pending", str(error), next_at)
                self._wake.set()  # recompute when the sender next wakes
            else:
                log.warning("notification %s failed after %d attempt(s): %s", n.id, attempt, error)
                await self._record(n, "failed", str(error))
        except ProviderError as e:  # the store itself: the row stays pending for later
            log.warning("notification %s: outbox unavailable: %s", n.id, e)
        finally:
            self._in_flight.discard(n.id)
            self._slots.release()

    async def _record(
        self, n: Notification, status: str, error: str = "", next_at: dt.datetime | None = None
    ) -> None:
        assert self.store is not None
        store = self.store
        await store.run(store.record_attempt_sync, n.id, status, error, next_at)

    async def _attempt(self, n: Notification) -> ProviderError | None:
        """One send; the error it ended with (None: accepted)."""
        channel = self._channels[n.channel]
        with trio.move_on_after(self.send_timeout_s) as scope:
            try:
                await channel.send(n)
            except ProviderError as e:
                return e
            except Exception as e:  # a bug in the channel: recorded, not retried
                log.exception("channel %s raised on notification %s", n.channel, n.id)
                return ProviderError(f"{type(e).__name__}: {e}", provider=n.channel)
        if scope.cancelled_caught:
            return ProviderError(
                f"no answer within {self.send_timeout_s:g} s", provider=n.channel, retryable=True
            )
        return None


def _mask(address: str) -> str:
    """A phone number or address as logs show it: enough to recognise, not to dial."""
    return address if len(address) <= 4 else "…" + address[-4:]

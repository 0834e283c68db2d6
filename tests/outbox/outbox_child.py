"""One server process's outbox, for the kill -9 test: `python outbox_child.py DB URL MODE`.

MODE `enqueue`: commit one notification, print "committed", then run the sender.
MODE `resume`: only run the sender (a restarted server). Runs until killed."""

from __future__ import annotations

import sys

import trio

from hookline.outbox import Outbox, OutboxStore
from hookline.outbox.webhook import WebhookChannel, WebhookSettings
from hookline.retry import Backoff

SECRET = "kill-test-secret"
KEY = "booking:A1:booked"


async def main(db: str, url: str, mode: str) -> None:
    outbox = Outbox(
        OutboxStore(db),
        backoff=Backoff(first_s=0.2, max_s=0.5, attempts=50),
        poll_s=0.2,
        send_timeout_s=5,
    )
    outbox.add_channel("webhook", WebhookChannel(WebhookSettings(url=url), SECRET))
    if mode == "enqueue":
        notification_id = await outbox.enqueue(
            key=KEY, channel="webhook", body="Booked", kind="booking.booked"
        )
        print("committed", notification_id, flush=True)
    await outbox.run()


if __name__ == "__main__":
    trio.run(main, *sys.argv[1:4])

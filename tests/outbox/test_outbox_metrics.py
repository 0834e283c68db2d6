"""/metrics reports the outbox: `hookline_notifications_pending` / `_failed` follow the
store's counts as the sender sees them (a runtime started with notification channels)."""

from __future__ import annotations

import sys
from pathlib import Path

import trio
from prometheus_client.parser import text_string_to_metric_families

from hookline.metrics import metrics_for

sys.path.insert(0, str(Path(__file__).parent))

from outbox_helpers import CALLER, book, shop_runtime, wait_settled


def _gauges(runtime) -> dict[str, float]:
    text = metrics_for(runtime).exposition().decode()
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("hookline_notifications_")
    }


async def test_metrics_report_pending_then_failed_notifications(
    tmp_path, twilio_rest, twilio_secrets
):
    twilio_rest.message_faults = [429] * 3  # the confirmation waits, then...
    twilio_rest.retry_after = "1"
    twilio_rest.invalid_numbers.add(CALLER)  # ... is refused for good
    runtime = shop_runtime(tmp_path, twilio_rest, twilio_secrets)
    await runtime.start()
    assert _gauges(runtime) == {
        "hookline_notifications_pending": 0,
        "hookline_notifications_failed": 0,
    }
    seen_pending = False
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runtime.outbox.run)
        await book(runtime)
        with trio.fail_after(20):
            while _gauges(runtime)["hookline_notifications_failed"] != 1:
                seen_pending |= _gauges(runtime)["hookline_notifications_pending"] == 1
                await trio.sleep(0.02)
        await wait_settled(runtime)
        nursery.cancel_scope.cancel()
    assert seen_pending  # reported while it waited for its retry
    assert _gauges(runtime)["hookline_notifications_pending"] == 0
    await runtime.aclose()

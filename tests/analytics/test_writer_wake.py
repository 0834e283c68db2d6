"""Raw events do not wake the writer thread (a GIL hand-off per event on the server's
core, issue 14); they still land, in order, at the flush interval or the next flush."""

from __future__ import annotations

import time
from pathlib import Path

from hookline.analytics.rows import Privacy, Shaper
from hookline.analytics.writer import Writer
from hookline.config import PricesConfig
from hookline.events import DtmfReceived
from hookline.providers import CallInfo


def shaper() -> Shaper:
    return Shaper(privacy=Privacy(), prices=PricesConfig(), providers={}, models={})


def wait_for(predicate, limit_s: float = 30.0) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_events_wait_for_the_flush_instead_of_waking_the_writer(db: Path, query) -> None:
    writer = Writer(db.resolve(), flush_interval=3600.0)
    writer.open()
    try:
        info = CallInfo(call_id="call-w")
        writer.call_started(shaper(), info, time.time())  # a start wakes it at once
        assert wait_for(lambda: writer.rows_written > 0 and writer._asleep)
        # The first event wakes the idle writer (so it lands within the interval) ...
        writer.call_event(shaper(), info, DtmfReceived(t=0.0, turn=1, digit="0"))
        assert wait_for(lambda: writer.backlog == 0)
        # ... the next ones wait for the flush due an interval after it: no wake-ups.
        for i in range(1, 5):
            writer.call_event(shaper(), info, DtmfReceived(t=float(i), turn=1, digit=str(i)))
        time.sleep(0.3)
        assert writer.backlog == 4
        assert writer.flush()
        assert writer.backlog == 0
    finally:
        writer.close()
    rows = query("SELECT t, data FROM events WHERE call_id = 'call-w' ORDER BY seq")
    assert [t for t, _ in rows] == [0.0, 1.0, 2.0, 3.0, 4.0]  # all, in the order emitted
    assert all(f'"{i}"' in data for i, (_, data) in enumerate(rows))


def test_events_alone_land_within_the_flush_interval(db: Path, query) -> None:
    writer = Writer(db.resolve(), flush_interval=0.2)
    writer.open()
    try:
        info = CallInfo(call_id="call-x")
        writer.call_started(shaper(), info, time.time())
        assert wait_for(lambda: writer.rows_written > 0)
        written = writer.rows_written
        time.sleep(0.5)  # the writer is asleep with nothing due: the event must wake it
        writer.call_event(shaper(), info, DtmfReceived(t=1.0, turn=1, digit="7"))
        assert wait_for(lambda: writer.rows_written > written)
        assert writer.backlog == 0
    finally:
        writer.close()
    assert query("SELECT count(*) FROM events WHERE call_id = 'call-x'")[0][0] >= 1

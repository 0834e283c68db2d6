"""The writer: one thread per database file per process, the only code that touches DuckDB.

The trio thread only puts tuples on a `queue.SimpleQueue` (lock-free for the producer, never
blocks); the writer thread drains whatever has piled up, turns it into rows and appends
them with DuckDB's appender, one transaction per flush so a call's rows land together.
The writer is woken only for what must not wait long (a call's start and end, a row, a
flush, close); raw events wait in the queue, in order, for its next wake (at the latest
`flush_interval` later). Waking it for each event would hand the GIL to this thread and
back several hundred times a second, each time stalling the trio thread that carries
every call's audio.

When rows are flushed:
- a call's first row within CALL_ROWS_WITHIN_S of its start (so a call alive when the
  process dies is found at the next start and marked `interrupted`);
- all of a call's rows within CALL_ROWS_WITHIN_S of its end;
- raw events of calls still running every `flush_interval` seconds, or sooner when many
  are buffered;
- everything pending on shutdown.

A flush that DuckDB refuses is retried row by row so one bad row costs only itself.

The writer thread runs WRITER_NICE steps below the process's CPU priority (Linux, where
a thread has its own): on a busy core the kernel runs the trio thread first when both
want it, and DuckDB's own threads, started from this one, inherit the priority.

When the storage fails (disk full, file gone, I/O error) nothing is lost at first: the
rows stay staged in memory, up to MAX_PENDING_ROWS (past it the oldest raw events go
first, then the other tables, counted), and the write is retried with backoff. The
writer logs one ERROR when writes start failing, one summary a minute while they keep
failing and one line when they work again, and reports the failure as a health
problem meanwhile (`problem`, shown by /healthz). Since a call's `calls` row is an
upsert, the row written on recovery is its last one, with its end reason.

Finished calls also go to Parquet segments in a folder shared by every process (see
segments.py): the calls are listed in `segment_pending` in the transaction that writes
their last rows, and a segment of them is written on this thread at most every
SEGMENT_EVERY_S (at once on an explicit flush and on close). A segment that cannot be
written is logged and tried again later: the database write never waits on it.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb

from ..events import CallEvent, CallRecord, RecordingCompleted
from ..providers import CallInfo
from .rows import CallState, Row, Shaper, numbers_of, utc
from .schema import TABLES, UPSERT_TABLES, connect, open_database
from .segments import SegmentWriter

__all__ = ["Writer", "acquire", "release"]

log = logging.getLogger("hookline.analytics")

_START, _EVENT, _END, _FLUSH, _STOP, _KILL, _ROW = range(7)

MAX_BATCH = 5000  # queue items handled between two looks at whether to flush
# A call's start and end rows are written at most this long after they happen, together
# with whatever else came meanwhile: a flush is one DuckDB transaction, ~8 ms of CPU
# however few its rows (the `calls` upsert ~5 ms, `segment_pending` ~1.5), on the
# core that carries the calls' audio. One flush per start and per end cost 12 ms per
# call where calls come and go a few a second; coalesced, ~4 ms.
CALL_ROWS_WITHIN_S = 0.5
# How far below the process's priority (nice steps) the writer thread and DuckDB's run.
WRITER_NICE = 10
MAX_BUFFERED_ROWS = 20_000  # flush early past this many buffered rows
APPEND_CHUNK = 200  # rows per append_rows call: it holds the GIL ~10 us per row
MAX_BACKLOG = 500_000  # past this many queued items, raw events are dropped (and counted)
MAX_PENDING_ROWS = 200_000  # rows kept in memory while the storage fails (~100 MB at most)
RETRY_FIRST_S = 1.0  # first retry after a storage failure, doubling up to RETRY_MAX_S
RETRY_MAX_S = 30.0
SUMMARY_EVERY_S = 60.0  # one log line this often while the storage keeps failing
SEGMENT_EVERY_S = 5.0  # at most one Parquet segment this often: fewer, larger files
# Drop order when the in-memory backlog is full: the least useful rows first.
_DROP_ORDER = ("events", "latencies", "turns", "tool_calls", "calls")


class Writer:
    """Owns one DuckDB connection on its own thread. Create through `acquire`."""

    def __init__(
        self,
        path: Path,
        *,
        where: str = "",
        flush_interval: float = 1.0,
        segments: Path | None = None,
    ) -> None:
        self.path = path
        self.segments = SegmentWriter(segments) if segments is not None else None
        self._segment_due: float | None = None  # when pending calls get their segment
        self._segment_failing = False
        self.where = where
        self.flush_interval = flush_interval
        self.users = 0
        self.recovered: list[str] = []  # calls marked interrupted when this writer opened
        self.dropped_events = 0
        self.rows_written = 0
        self.flushes = 0
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._wake = threading.Event()  # set with every item that must not wait
        self._thread: threading.Thread | None = None
        self._open_error: BaseException | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        self._appenders: dict[str, Any] = {}
        self._calls: dict[str, CallState] = {}
        self._by_provider_id: dict[str, str] = {}
        self._staged: dict[str, list[Row]] = {t: [] for t in TABLES if t != "calls"}
        self._staged_calls: dict[str, Row] = {}  # upserts: the last row per call wins
        self._staged_count = 0
        self._oldest_staged = 0.0
        self._call_rows_due: float | None = None  # a start, end or row waits until then
        self._seq = 0
        # Storage failure state (writer thread only; `problem` is read from any thread).
        self.problem: str | None = None
        self.dropped_rows = 0  # rows dropped from the in-memory backlog while failing
        self._failing_since = 0.0
        self._retry_at = 0.0
        self._retry_delay = RETRY_FIRST_S
        self._summary_at = 0.0
        self._failed_attempts = 0
        self._reconnect = False
        self._dropping = False  # rows are being dropped in this failure

    # ------------------------------------------------------------ producer side (trio thread)

    def _put_urgent(self, item: tuple[Any, ...]) -> None:
        self._queue.put(item)
        self._wake.set()

    def call_started(self, shaper: Shaper, info: CallInfo, started: float) -> None:
        self._put_urgent((_START, shaper, info, started))

    def call_event(self, shaper: Shaper, info: CallInfo, event: CallEvent) -> None:
        if self._queue.qsize() > MAX_BACKLOG:
            # DuckDB cannot keep up: losing debug events beats growing without bound.
            # Call rows (start, end) are never dropped.
            self.dropped_events += 1
            if self.dropped_events % 10_000 == 1:
                log.warning("analytics writer is behind: %d events dropped", self.dropped_events)
            return
        self._queue.put((_EVENT, shaper, info, event, time.time()))

    def call_ended(self, shaper: Shaper, info: CallInfo, record: CallRecord) -> None:
        self._put_urgent((_END, shaper, info, record))

    def call_summary(self, row: Row) -> None:
        """A `call_summaries` row (see hookline/summary.py), written at once."""
        self._put_urgent((_ROW, "call_summaries", row))

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    # ------------------------------------------------------------ lifecycle (any thread)

    def open(self) -> None:
        """Open the file on the writer thread and wait for it (raises what opening raised)."""
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name=f"hookline-analytics:{self.path.name}",
            daemon=True,
        )  # fmt: skip
        self._thread.start()
        ready.wait()
        if self._open_error is not None:
            self._thread.join()
            raise self._open_error

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Block until everything queued before this call is in the database (or, while
        the storage fails, staged in memory after one more attempt to write it)."""
        if self._thread is None or not self._thread.is_alive():
            return False
        done = threading.Event()
        self._put_urgent((_FLUSH, done))
        return done.wait(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush everything pending and close the file."""
        if self._thread is None:
            return
        self._put_urgent((_STOP,))
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("analytics writer did not finish within %s s", timeout)

    def abandon(self) -> None:
        """Close without writing what is pending, as if the process died (for tests)."""
        if self._thread is None:
            return
        self._put_urgent((_KILL,))
        self._thread.join()

    # ------------------------------------------------------------ the writer thread

    def _run(self, ready: threading.Event) -> None:
        _lower_this_threads_priority(WRITER_NICE)
        try:
            con = self._con = open_database(self.path, where=self.where)
            self.recovered = self._recover(con)
            if self.segments is not None:  # calls left pending by the last run: now
                self._segment_due = 0.0
            ((seq,),) = con.execute("SELECT coalesce(max(seq), 0) FROM events").fetchall()
            self._seq = int(seq)
            self._appenders = _appenders(con)
        except BaseException as e:
            self._open_error = e
            if self._con is not None:
                self._con.close()
            ready.set()
            return
        ready.set()
        try:
            while True:
                try:
                    if not self._loop_once():
                        break
                except Exception:  # the writer must outlive any one bad batch
                    log.exception("analytics writer error; continuing")
        finally:
            _quietly(self._con.close)  # the first connection, or the one after a fatal error

    def _recover(self, con: duckdb.DuckDBPyConnection) -> list[str]:
        """Calls that started but never ended: the process died under them."""
        con.begin()
        rows = con.execute(
            "UPDATE calls SET end_reason = 'interrupted' "
            "WHERE ended IS NULL AND end_reason IS NULL RETURNING id"
        ).fetchall()
        ids = [r[0] for r in rows]
        if ids and self.segments is not None:  # they are finished now: into a segment
            _list_for_segment(con, ids)
        con.commit()
        if ids:
            log.warning(
                "%d call(s) were cut off by the last shutdown: marked interrupted", len(ids)
            )
        return ids

    def _loop_once(self) -> bool:
        timeout = None
        if self._staged_count:
            due = self._retry_at if self.problem else self._oldest_staged + self.flush_interval
            timeout = max(0.0, due - time.monotonic())
        # While the storage fails, only the retry timer wakes it for the staged rows.
        call_rows_at = None if self.problem else self._call_rows_due
        for due in (self._segment_due, call_rows_at):
            if due is not None:
                wait = max(0.0, due - time.monotonic())
                timeout = wait if timeout is None else min(timeout, wait)
        # Raw events do not wake the writer: it looks at the queue at least this often.
        self._wake.wait(self.flush_interval if timeout is None else timeout)
        self._wake.clear()  # before draining: an item put from now on wakes the next wait
        batch = []
        while len(batch) < MAX_BATCH:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        else:
            self._wake.set()  # more is queued: no waiting before the next batch
        if not batch:
            self._flush()
            self._write_segment()
            return True
        urgent = False  # a flush or close: write now
        call_rows = False  # a start, end or row: write within CALL_ROWS_WITHIN_S
        waiters: list[threading.Event] = []
        stop = False
        for item in batch:
            op = item[0]
            try:
                if op == _EVENT:
                    self._event(*item[1:])
                elif op == _START:
                    self._start(*item[1:])
                    call_rows = True
                elif op == _END:
                    self._end(*item[1:])
                    call_rows = True
                elif op == _ROW:
                    self._stage(item[1], [item[2]])
                    call_rows = True
                elif op == _FLUSH:
                    waiters.append(item[1])
                    urgent = True
                elif op == _STOP:
                    stop = urgent = True
                elif op == _KILL:
                    return False
            except Exception:  # a bad record must not kill the writer
                log.exception("analytics: could not turn a %s into rows", _NAMES[op])
        try:
            now = time.monotonic()
            if call_rows and self._call_rows_due is None:
                self._call_rows_due = now + CALL_ROWS_WITHIN_S
            rows_due = self._call_rows_due is not None and now >= self._call_rows_due
            overdue = self._staged_count and (
                now >= self._oldest_staged + self.flush_interval
            )  # so a steady stream of events cannot put the timed flush off
            if urgent or rows_due or overdue or self._staged_count >= MAX_BUFFERED_ROWS:
                # While the storage fails only the retry timer, an explicit flush or the
                # stop request tries again: not every call start and end.
                self._flush(retry_now=bool(waiters) or stop)
        except Exception:  # logged; waiters and a stop request are still honoured
            log.exception("analytics: flush failed")
        try:
            self._write_segment(now=bool(waiters) or stop)
        except Exception:
            log.exception("analytics: segment failed")
        finally:
            for w in waiters:
                w.set()
        if stop and self._staged_count:
            log.error(
                "analytics: %d rows could not be written to %s before closing (%s)",
                self._staged_count, self.path, self.problem,
            )  # fmt: skip
        return not stop

    def _stage(self, table: str, rows: list[Row]) -> None:
        if not rows:
            return
        if not self._staged_count:
            self._oldest_staged = time.monotonic()
        if table == "calls":
            for row in rows:
                self._staged_calls[row[0]] = row
        else:
            self._staged[table].extend(rows)
        self._staged_count = len(self._staged_calls) + sum(map(len, self._staged.values()))
        if self.problem and self._staged_count > MAX_PENDING_ROWS:
            self._drop_oldest(self._staged_count - MAX_PENDING_ROWS)

    def _drop_oldest(self, excess: int) -> None:
        """Keep the in-memory backlog bounded: drop the oldest of the least useful rows."""
        first = not self._dropping
        self._dropping = True
        for table in _DROP_ORDER:
            if excess <= 0:
                break
            if table == "calls":
                for call_id in list(self._staged_calls)[:excess]:
                    del self._staged_calls[call_id]
                    excess -= 1
                    self.dropped_rows += 1
            else:
                rows = self._staged[table]
                n = min(excess, len(rows))
                del rows[:n]
                excess -= n
                self.dropped_rows += n
        self._staged_count = len(self._staged_calls) + sum(map(len, self._staged.values()))
        if first:
            log.error(
                "analytics: %d rows wait in memory, the most kept: dropping the oldest "
                "(raw events first) until %s can be written again",
                MAX_PENDING_ROWS, self.path,
            )  # fmt: skip

    def _start(self, shaper: Shaper, info: CallInfo, started: float) -> None:
        self._calls[info.call_id] = CallState(
            provider_call_id=info.provider_call_id, numbers=numbers_of(info)
        )
        if info.provider_call_id:
            self._by_provider_id[info.provider_call_id] = info.call_id
        self._stage("calls", [shaper.started_row(info, started)])

    def _event(self, shaper: Shaper, info: CallInfo, event: CallEvent, wall: float) -> None:
        call_id = info.call_id or self._by_provider_id.get(info.provider_call_id, "")
        state = self._calls.get(call_id)
        if state is not None:
            state.observe(event, wall)
        if isinstance(event, RecordingCompleted):
            pcid = info.provider_call_id or (state.provider_call_id if state else "")
            call_id = call_id or self._call_of(pcid)
            self._stage("recordings", [_recording_row(call_id, pcid, event, wall)])
        if shaper.store_events:
            self._seq += 1
            pcid = info.provider_call_id or (state.provider_call_id if state else "")
            numbers = (*numbers_of(info), *(state.numbers if state else ()))
            row = shaper.event_row(call_id, pcid, self._seq, wall, event, numbers)
            self._stage("events", [row])

    def _call_of(self, provider_call_id: str) -> str:
        """The call a late callback (a recording, after the call ended) belongs to: a
        staged row, else the database; '' when neither knows it."""
        if not provider_call_id:
            return ""
        for row in self._staged_calls.values():
            if row[1] == provider_call_id:
                return str(row[0])
        if self._con is None or self._reconnect:
            return ""
        try:
            found = self._con.execute(
                "SELECT id FROM calls WHERE provider_call_id = ? ORDER BY started DESC LIMIT 1",
                [provider_call_id],
            ).fetchall()
        except Exception as e:  # the storage is failing: the row is still kept, unlinked
            log.warning("analytics: cannot look up call %s: %s", provider_call_id, e)
            return ""
        return str(found[0][0]) if found else ""

    def _end(self, shaper: Shaper, info: CallInfo, record: CallRecord) -> None:
        call_id = record.call_id or info.call_id
        state = self._calls.pop(call_id, None)
        if state is not None and state.provider_call_id:
            self._by_provider_id.pop(state.provider_call_id, None)
        for table, rows in shaper.ended_rows(info, record, state).items():
            self._stage(table, rows)

    def _flush(self, *, retry_now: bool = False) -> None:
        if not self._staged_count:
            return
        if self.problem and not retry_now and time.monotonic() < self._retry_at:
            return
        self._call_rows_due = None
        batches: dict[str, list[Row]] = {"calls": list(self._staged_calls.values())}
        batches.update(self._staged)
        self._staged = {t: [] for t in self._staged}
        self._staged_calls = {}
        self._staged_count = 0
        try:
            if self._reconnect:
                self._open_connection()
            self._write(batches)
        except Exception as e:
            con = self._con
            if con is not None:
                _quietly(con.rollback)
            if _storage_failed(e):
                self._storage_failing(e, batches)
                return
            log.error("analytics: a batch was refused (%s); retrying row by row", e)
            self._salvage(batches)
            return
        self.flushes += 1
        self.rows_written += sum(len(r) for r in batches.values())
        self._storage_works()

    def _write(self, batches: dict[str, list[Row]]) -> None:
        """All of `batches` in one transaction (the seam the disk-full tests fail)."""
        con = self._con
        assert con is not None
        con.begin()
        for table, rows in batches.items():
            if rows:
                appender = self._appenders[table]
                for i in range(0, len(rows), APPEND_CHUNK):
                    appender.append_rows(rows[i : i + APPEND_CHUNK])
                    # This is the writer thread, never async code: a zero sleep only
                    # hands the GIL to the trio thread between appended chunks.
                    time.sleep(0)
                appender.flush()
        finished = [r[0] for r in batches.get("calls", ()) if _finished(r)]
        if finished and self.segments is not None:
            _list_for_segment(con, finished)
            if self._segment_due is None:
                self._segment_due = time.monotonic() + SEGMENT_EVERY_S
        con.commit()

    def _write_segment(self, *, now: bool = False) -> None:
        """The pending finished calls as one Parquet segment, when due (or `now`)."""
        due = self._segment_due
        if self.segments is None or due is None or self._con is None or self._reconnect:
            return
        if not now and time.monotonic() < due:
            return
        try:
            self.segments.write(self._con)
        except Exception as e:
            self._segment_due = time.monotonic() + RETRY_MAX_S
            if not self._segment_failing:
                self._segment_failing = True
                log.error(
                    "analytics: cannot write a segment to %s (%s); the calls stay in %s "
                    "and are tried again", self.segments.directory, _one_line(e), self.path,
                )  # fmt: skip
            return
        self._segment_due = None
        if self._segment_failing:
            self._segment_failing = False
            log.warning("analytics: writing segments to %s again", self.segments.directory)

    def _salvage(self, batches: dict[str, list[Row]]) -> None:
        for appender in self._appenders.values():
            _quietly(appender.clear)
        tables = list(batches)
        for n, table in enumerate(tables):
            appender = self._appenders[table]
            rows = batches[table]
            for i, row in enumerate(rows):
                try:
                    appender.append_row(*row)
                    appender.flush()
                    self.rows_written += 1
                except Exception as e:
                    _quietly(appender.clear)
                    if _storage_failed(e):  # not this row: keep it and the rest for later
                        rest = {t: batches[t] for t in tables[n + 1 :]}
                        rest[table] = rows[i:]
                        self._storage_failing(e, rest)
                        return
                    log.error("analytics: dropped one %s row for call %s: %s", table, row[0], e)
        finished = [r[0] for r in batches.get("calls", ()) if _finished(r)]
        if finished and self.segments is not None and self._con is not None:
            try:
                _list_for_segment(self._con, finished)
                self._segment_due = self._segment_due or time.monotonic() + SEGMENT_EVERY_S
            except Exception as e:  # the calls are in the database; only their segment waits
                log.error("analytics: cannot list %d calls for a segment: %s", len(finished), e)

    # ------------------------------------------------------------ storage failures

    def _storage_failing(self, error: Exception, batches: dict[str, list[Row]]) -> None:
        """Put the rows back (oldest first), log once, and schedule a retry."""
        for appender in self._appenders.values():
            _quietly(appender.clear)
        self._staged_calls = {
            **{row[0]: row for row in batches.get("calls", [])},
            **self._staged_calls,  # a newer row of the same call wins, keeping its place
        }
        for table, rows in batches.items():
            if table != "calls":
                self._staged[table][:0] = rows
        self._staged_count = len(self._staged_calls) + sum(map(len, self._staged.values()))
        if self._staged_count > MAX_PENDING_ROWS:
            self._drop_oldest(self._staged_count - MAX_PENDING_ROWS)
        now = time.monotonic()
        self._failed_attempts += 1
        # An error that invalidated the connection needs a fresh one to recover.
        self._reconnect = isinstance(error, duckdb.FatalException) or "invalidated" in str(error)
        reason = _one_line(error)
        if self.problem is None:
            self._failing_since = self._summary_at = now
            self._retry_delay = RETRY_FIRST_S
            log.error(
                "analytics: cannot write to %s (%s); keeping up to %d rows in memory and "
                "retrying. Calls go on.", self.path, reason, MAX_PENDING_ROWS,
            )  # fmt: skip
        else:
            self._retry_delay = min(self._retry_delay * 2, RETRY_MAX_S)
            if now - self._summary_at >= SUMMARY_EVERY_S:
                self._summary_at = now
                log.error(
                    "analytics: still cannot write to %s after %.0f s (%s): %d rows wait in "
                    "memory, %d dropped, %d attempts", self.path, now - self._failing_since,
                    reason, self._staged_count, self.dropped_rows, self._failed_attempts,
                )  # fmt: skip
        self._retry_at = now + self._retry_delay
        self.problem = f"analytics cannot write to {self.path}: {reason}"

    def _storage_works(self) -> None:
        if self.problem is None:
            return
        log.warning(
            "analytics: writing to %s again after %.0f s (%d rows dropped since start)",
            self.path, time.monotonic() - self._failing_since, self.dropped_rows,
        )  # fmt: skip
        self.problem = None
        self._dropping = False
        self._failed_attempts = 0
        self._retry_delay = RETRY_FIRST_S

    def _open_connection(self) -> None:
        """A fresh connection to the (already migrated) file, after a fatal error."""
        if self._con is not None:
            _quietly(self._con.close)
        con = self._con = connect(self.path)  # STORAGE_VERSION, should the file be gone
        self._appenders = _appenders(con)
        self._reconnect = False


_NAMES = {
    _START: "call start", _EVENT: "event", _END: "call record", _FLUSH: "flush", _ROW: "row",
}  # fmt: skip


def _appenders(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    return {t: con.appender(t, action="upsert" if t in UPSERT_TABLES else "insert") for t in TABLES}


def _list_for_segment(con: duckdb.DuckDBPyConnection, call_ids: list[str]) -> None:
    """Put finished calls on the next segment's list. One statement: `executemany` runs
    one insert per call, ~5 ms of CPU for three calls against ~1.5 for this, on the core
    that carries the calls' audio."""
    con.execute("INSERT OR IGNORE INTO segment_pending SELECT unnest($1::VARCHAR[])", [call_ids])


def _finished(row: Row) -> bool:
    """A calls row with its end: ended, or an end reason (rejected, interrupted)."""
    return row[3] is not None or row[7] is not None


def _recording_row(call_id: str, pcid: str, event: RecordingCompleted, wall: float) -> Row:
    return (
        event.recording_sid, call_id, pcid or None, event.status, event.duration_s,
        event.url or None, utc(wall),
    )  # fmt: skip


def _storage_failed(error: BaseException) -> bool:
    """The storage, not the rows, is at fault: disk full, I/O error, file gone."""
    if isinstance(error, OSError | duckdb.IOException | duckdb.FatalException):
        return True
    text = str(error)
    return any(
        s in text
        for s in ("No space left", "Could not write", "Failed to commit", "invalidated", "I/O")
    )


def _one_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _quietly(fn: Any) -> None:
    try:
        fn()
    except Exception:
        pass


# One writer per database file in this process, shared by every runtime that uses it.
_writers: dict[Path, Writer] = {}
_lock = threading.Lock()


def acquire(path: Path, *, where: str = "", segments: Path | None = None) -> Writer:
    """The writer for `path`, opened (and the file migrated and recovered) on first use;
    with `segments`, finished calls also go to Parquet segments in that folder."""
    key = path.resolve()
    with _lock:
        writer = _writers.get(key)
        if writer is None:
            writer = Writer(key, where=where, segments=segments)
            writer.open()
            _writers[key] = writer
        writer.users += 1
        return writer


@atexit.register
def _close_all() -> None:
    """The interpreter is exiting without the runtime having stopped (an uncaught error,
    Ctrl-C): still write what is pending. A killed process skips this; its live calls
    are marked interrupted at the next start."""
    with _lock:
        writers = list(_writers.values())
        _writers.clear()
    for writer in writers:
        writer.close(timeout=10.0)


def release(writer: Writer, *, abandon: bool = False) -> None:
    """Drop one user; the last one flushes and closes the file (or abandons it)."""
    with _lock:
        writer.users -= 1
        if writer.users > 0:
            return
        _writers.pop(writer.path, None)
    if abandon:
        writer.abandon()
    else:
        writer.close()


def _lower_this_threads_priority(steps: int) -> None:
    """Lower the calling thread's CPU priority by `steps` nice steps. Linux only: there
    `setpriority` takes a thread id; elsewhere it would take the whole process."""
    if not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + steps))
    except OSError as e:  # a sandbox that refuses it: the writer runs as it always did
        log.debug("analytics writer keeps its priority: %s", e)

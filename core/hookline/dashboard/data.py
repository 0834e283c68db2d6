"""The dashboard's reads of the analytics data, always off the trio thread.

Where the rows come from:
- inside `hookline serve`: the database file the analytics writer holds open. A second
  process cannot open it, but in this process `duckdb.connect(path)` joins the writer's
  database instance (DuckDB shares one instance per file and configuration per process),
  so the dashboard reads committed rows while the writer writes;
- `hookline dashboard CONFIG`: the same file opened read-only (the server stopped);
- `hookline dashboard CONFIG --data DIR`: the Parquet folder `hookline analytics export`
  wrote, as views in an in-memory database.

Each query runs in a worker thread behind the dashboard's own small CapacityLimiter
(never the runtime's), on a cursor of its own (a DuckDB connection is not for two
threads at once), so a slow query waits for a thread, never for a call's audio.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import trio

from ..errors import ConfigError

__all__ = [
    "Analytics",
    "CallFilter",
    "open_file",
    "open_live",
    "open_parquet",
    "segments_analytics",
]

T = TypeVar("T")
Opener = Callable[[], duckdb.DuckDBPyConnection]
PAGE_SIZE = 25
BOOKING_TOOLS = ("book_appointment",)

# The waterfall's parts, in the order they happen. Each is a span of the turn's
# voice-to-voice (see engine/metrics.py): they add up to it by construction.
WATERFALL = (
    ("stt_final", "STT final"),
    ("end_of_turn_wait", "end of turn"),
    ("llm_first_token", "LLM first token"),
    ("llm_to_sentence", "LLM to first sentence"),
    ("tool", "tools"),
    ("tts_first_byte", "TTS first byte"),
    ("runtime_overhead", "runtime overhead"),
)


def open_live(path: Path) -> Opener:
    return lambda: duckdb.connect(str(path))


def open_file(path: Path) -> Opener:
    def opener() -> duckdb.DuckDBPyConnection:
        if not path.exists():
            raise ConfigError(f"no analytics database at {path} (no call recorded yet?)")
        try:
            return duckdb.connect(str(path), read_only=True)
        except duckdb.IOException as e:
            if "lock" in str(e).lower():
                raise ConfigError(
                    f"{path} is in use by a running hookline: open its /admin instead, or "
                    "export the data (hookline analytics export) and use --data DIR"
                ) from None
            raise ConfigError(f"cannot open {path}: {e}") from None

    return opener


def open_parquet(directory: Path) -> Opener:
    def opener() -> duckdb.DuckDBPyConnection:
        if not directory.is_dir():
            raise ConfigError(f"no exported data in {directory} (hookline analytics export)")
        con = duckdb.connect(":memory:")
        for table in ("calls", "turns", "latencies", "tool_calls"):
            files = directory / table
            if not files.is_dir():
                raise ConfigError(f"{directory} has no {table}/ folder: not an export")
            glob = str(files / "**" / "*.parquet").replace("'", "''")
            con.execute(
                f"CREATE VIEW {table} AS SELECT * EXCLUDE (day) FROM "
                f"read_parquet('{glob}', hive_partitioning = true, union_by_name = true)"
            )
        return con

    return opener


def segments_analytics(directory: Path, tz: str) -> Analytics:
    """Every server's finished calls: the shared Parquet segments in `directory`, read
    without a lock while the servers run. Held open (opening costs ~60-120 ms of CPU) and
    opened again when a table's first segment appears; a table's view reads its newer
    files as they come."""
    from ..analytics.segments import open_dataset, tables_with_segments

    return Analytics(
        partial(open_dataset, directory), tz, reopen_on=partial(tables_with_segments, directory)
    )


@dataclass(frozen=True)
class CallFilter:
    since: dt.date | None = None  # shop-local days, inclusive
    until: dt.date | None = None
    outcome: str = ""
    caller: str = ""
    tool: str = ""
    booked: str = ""  # "", "yes", "no"
    page: int = 1


class Analytics:
    """Queries over one source. `None` opener: analytics is off, every answer is empty."""

    def __init__(
        self,
        opener: Opener | None,
        tz: str,
        *,
        threads: int = 2,
        keep_open: bool = True,
        reopen_on: Callable[[], object] | None = None,
    ) -> None:
        self._opener = opener
        # A file of a stopped server is opened per query: held open, its lock would keep
        # `hookline serve` from starting.
        self.keep_open = keep_open
        # Held open, the connection is opened again whenever `reopen_on()` changes.
        self._reopen_on = reopen_on
        self._opened_on: object = None
        self.tz = tz
        self.limiter = trio.CapacityLimiter(threads)
        self._root: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._opener is not None

    async def run(self, query: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(self._run, query, args, limiter=self.limiter)

    def _run(self, query: Callable[..., T], args: tuple[Any, ...]) -> T:
        if not self.keep_open:
            assert self._opener is not None
            with self._lock:  # one at a time: each opens and closes the file
                con = self._opener()
                try:
                    return self._query(con, query, args)
                finally:
                    con.close()
        with self._lock:  # opening and cursor() touch the shared root connection
            now = self._reopen_on() if self._reopen_on is not None else None
            if self._root is not None and now != self._opened_on:
                # Dropped, not closed: a query of the other thread may be on a cursor of it.
                self._root = None
            if self._root is None:
                assert self._opener is not None
                self._root = self._opener()
                self._opened_on = now
            cursor = self._root.cursor()
        try:
            return self._query(cursor, query, args)
        finally:
            cursor.close()

    def _query(
        self, con: duckdb.DuckDBPyConnection, query: Callable[..., T], args: tuple[Any, ...]
    ) -> T:
        con.execute(f"SET TimeZone = '{_sql_str(self.tz)}'")
        return query(con, *args)

    def close(self) -> None:
        with self._lock:
            if self._root is not None:
                self._root.close()
                self._root = None

    # ------------------------------------------------------------------ the queries

    async def today(self) -> dict[str, Any]:
        if not self.enabled:
            return {"outcomes": {}, "calls": 0, "booked": 0, "v2v_p50": None}
        return await self.run(_today, self.tz)

    async def calls(self, f: CallFilter) -> tuple[list[dict[str, Any]], int]:
        if not self.enabled:
            return [], 0
        return await self.run(_calls, self.tz, f)

    async def call(self, call_id: str) -> dict[str, Any] | None:
        if not self.enabled:
            return None
        return await self.run(_call, self.tz, call_id)

    async def trends(self, days: int) -> dict[str, Any]:
        if not self.enabled:
            return {"days": [], "hours": []}
        return await self.run(_trends, self.tz, days)

    async def tools(self) -> list[str]:
        if not self.enabled:
            return []
        return await self.run(
            lambda cur: [
                r[0]
                for r in cur.execute("SELECT DISTINCT tool FROM tool_calls ORDER BY 1").fetchall()
            ]
        )


def _sql_str(text: str) -> str:
    return text.replace("'", "''")


def _local(column: str, tz: str) -> str:
    """A UTC TIMESTAMP column as the shop's wall-clock time."""
    return f"(({column} AT TIME ZONE 'UTC') AT TIME ZONE '{_sql_str(tz)}')"


_NOW_UTC = "timezone('UTC', now())"  # the UTC wall-clock time, as `started` stores it
_OUTCOME = "coalesce(split_part(c.end_reason, ':', 1), 'active')"


def _rows(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _all(cur: duckdb.DuckDBPyConnection, sql: str, *params: Any) -> list[dict[str, Any]]:
    """The rows of a table that may be absent: the Parquet dataset a standalone dashboard
    reads holds the calls' own tables, not the summaries or recordings written later."""
    try:
        cur.execute(sql, list(params))
    except duckdb.CatalogException:
        return []
    return _rows(cur)


def _first(cur: duckdb.DuckDBPyConnection, sql: str, *params: Any) -> dict[str, Any] | None:
    rows = _all(cur, sql, *params)
    return rows[0] if rows else None


def _today(cur: duckdb.DuckDBPyConnection, tz: str) -> dict[str, Any]:
    local = _local("c.started", tz)
    today = f"CAST({local} AS DATE) = CAST({_local(_NOW_UTC, tz)} AS DATE)"
    outcomes = dict(
        cur.execute(f"SELECT {_OUTCOME}, count(*) FROM calls c WHERE {today} GROUP BY 1").fetchall()
    )
    booked = cur.execute(
        f"SELECT count(*) FROM tool_calls t JOIN calls c ON c.id = t.call_id "
        f"WHERE t.ok AND t.tool IN ({', '.join('?' * len(BOOKING_TOOLS))}) AND {today}",
        list(BOOKING_TOOLS),
    ).fetchall()[0][0]
    v2v = cur.execute(
        f"SELECT quantile_cont(l.ms, 0.5) FROM latencies l JOIN calls c ON c.id = l.call_id "
        f"WHERE l.metric = 'voice_to_voice' AND {today}"
    ).fetchall()[0][0]
    return {
        "outcomes": outcomes,
        "calls": sum(outcomes.values()),
        "booked": int(booked),
        "v2v_p50": v2v,
    }


def _calls(cur: duckdb.DuckDBPyConnection, tz: str, f: CallFilter) -> tuple[list[dict], int]:
    local = _local("c.started", tz)
    where, params = ["true"], []
    if f.since:
        where.append(f"CAST({local} AS DATE) >= ?")
        params.append(f.since)
    if f.until:
        where.append(f"CAST({local} AS DATE) <= ?")
        params.append(f.until)
    if f.outcome:
        where.append(f"{_OUTCOME} = ?")
        params.append(f.outcome)
    if f.caller:
        where.append("contains(coalesce(c.from_number, ''), ?)")
        params.append(f.caller)
    if f.tool:
        where.append("EXISTS (SELECT 1 FROM tool_calls t WHERE t.call_id = c.id AND t.tool = ?)")
        params.append(f.tool)
    if f.booked:
        exists = (
            "EXISTS (SELECT 1 FROM tool_calls t WHERE t.call_id = c.id AND t.ok "
            f"AND t.tool IN ({', '.join(repr(t) for t in BOOKING_TOOLS)}))"
        )
        where.append(exists if f.booked == "yes" else f"NOT {exists}")
    sql_where = " AND ".join(where)
    ((total,),) = cur.execute(f"SELECT count(*) FROM calls c WHERE {sql_where}", params).fetchall()
    cur.execute(
        f"""SELECT c.id, {local} AS started, c.duration_s, c.from_number, {_OUTCOME} AS outcome,
                   c.turns, c.interrupted_turns, c.cost_usd,
                   (SELECT string_agg(DISTINCT t.tool, ', ') FROM tool_calls t
                    WHERE t.call_id = c.id) AS tools
            FROM calls c WHERE {sql_where}
            ORDER BY c.started DESC LIMIT {PAGE_SIZE} OFFSET ?""",
        [*params, (max(1, f.page) - 1) * PAGE_SIZE],
    )
    return _rows(cur), int(total)


def _call(cur: duckdb.DuckDBPyConnection, tz: str, call_id: str) -> dict[str, Any] | None:
    cur.execute(
        f"""SELECT c.*, {_local("c.started", tz)} AS started_local, {_OUTCOME} AS outcome
            FROM calls c WHERE c.id = ?""",
        [call_id],
    )
    found = _rows(cur)
    if not found:
        return None
    call = found[0]
    cur.execute(
        "SELECT turn, role, text, heard_text, interrupted, duration_ms FROM turns "
        "WHERE call_id = ? ORDER BY turn",
        [call_id],
    )
    turns = _rows(cur)
    cur.execute(
        "SELECT turn, tool, arguments, ok, error, result, latency_ms FROM tool_calls "
        "WHERE call_id = ? ORDER BY ts, tool_call_id",
        [call_id],
    )
    tools: dict[int, list[dict]] = {}
    for row in _rows(cur):
        tools.setdefault(row["turn"], []).append(row)
    latencies: dict[int, dict[str, float]] = {}
    for turn, metric, ms in cur.execute(
        "SELECT turn, metric, ms FROM latencies WHERE call_id = ?", [call_id]
    ).fetchall():
        latencies.setdefault(turn, {})[metric] = ms
    for t in turns:
        t["tools"] = tools.get(t["turn"], [])
        t["waterfall"] = waterfall(latencies.get(t["turn"], {}))
    call["turn_rows"] = turns
    totals = [sum(p[2] for p in t["waterfall"]) for t in turns if t["waterfall"]]
    call["max_v2v"] = max(totals, default=0.0)
    call["summary"] = _first(
        cur,
        "SELECT status, reason, summary, reason_for_calling, outcome, vehicle, "
        "follow_up_needed, follow_up, sentiment FROM call_summaries WHERE call_id = ?",
        call_id,
    )
    call["recordings"] = _all(
        cur,
        "SELECT recording_sid, status, duration_s, url FROM recordings "
        "WHERE call_id = ? ORDER BY received",
        call_id,
    )
    return call


def waterfall(m: dict[str, float]) -> list[tuple[str, str, float]] | None:
    """A turn's voice-to-voice as consecutive parts (key, label, ms) that sum to it.

    The boundaries, from the caller's speech end: STT final, end of turn, then the LLM's
    share (first token, the rest of the first sentence with the tool rounds in it), the
    TTS's first byte (none when a cached phrase went out first), and what remains is
    hookline's overhead. Each boundary is clamped into [previous, v2v], so the parts are
    never negative and always add up to v2v. None for a turn without a voice-to-voice
    or from before `llm_first_sentence` was stored.
    """
    v2v = m.get("voice_to_voice")
    if v2v is None or "llm_first_sentence" not in m:
        return None
    eot = m.get("end_of_turn_delay", 0.0)
    llm = m["llm_first_sentence"]
    tool = min(m.get("tool", 0.0), llm)
    first_token = min(m.get("llm_first_token", 0.0), llm - tool)
    tts = 0.0 if m.get("first_audio_cached") else m.get("tts_first_byte", 0.0)
    spans = (
        ("stt_final", min(m.get("stt_final", 0.0), eot)),
        ("end_of_turn_wait", eot - min(m.get("stt_final", 0.0), eot)),
        ("llm_first_token", first_token),
        ("llm_to_sentence", llm - tool - first_token),
        ("tool", tool),
        ("tts_first_byte", tts),
    )
    labels = dict(WATERFALL)
    parts, at = [], 0.0
    for key, ms in spans:
        end = min(v2v, at + max(0.0, ms))
        parts.append((key, labels[key], end - at))
        at = end
    parts.append(("runtime_overhead", labels["runtime_overhead"], v2v - at))
    return parts


def _trends(cur: duckdb.DuckDBPyConnection, tz: str, days: int) -> dict[str, Any]:
    local = _local("c.started", tz)
    since = f"CAST({local} AS DATE) > CAST({_local(_NOW_UTC, tz)} AS DATE) - {int(days)}"
    cur.execute(
        f"""WITH c AS (SELECT c.*, CAST({local} AS DATE) AS day, {_OUTCOME} AS outcome
                       FROM calls c WHERE {since})
            SELECT day, count(*) AS calls,
                   count(*) FILTER (WHERE outcome IN ('caller_hangup', 'agent_hangup'))
                       AS completed,
                   count(*) FILTER (WHERE outcome = 'transferred') AS transferred,
                   count(*) FILTER (WHERE outcome = 'rejected') AS rejected,
                   count(*) FILTER (WHERE outcome NOT IN ('caller_hangup', 'agent_hangup',
                       'transferred', 'rejected')) AS other,
                   avg(cost_usd) AS cost_per_call,
                   (SELECT quantile_cont(l.ms, 0.5) FROM latencies l JOIN c c2 ON c2.id = l.call_id
                    WHERE l.metric = 'voice_to_voice' AND c2.day = c.day) AS v2v_p50,
                   (SELECT quantile_cont(l.ms, 0.95) FROM latencies l JOIN c c2 ON c2.id = l.call_id
                    WHERE l.metric = 'voice_to_voice' AND c2.day = c.day) AS v2v_p95,
                   (SELECT avg(CASE WHEN t.ok THEN 0 ELSE 1 END) FROM tool_calls t
                    JOIN c c2 ON c2.id = t.call_id WHERE c2.day = c.day) AS tool_failure_rate
            FROM c GROUP BY day ORDER BY day"""
    )
    per_day = _rows(cur)
    cur.execute(
        f"SELECT hour({local}) AS hour, count(*) AS calls FROM calls c WHERE {since} "
        "GROUP BY 1 ORDER BY 1"
    )
    return {"days": per_day, "hours": _rows(cur)}

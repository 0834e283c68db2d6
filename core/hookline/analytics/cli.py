"""`hookline calls` and `hookline analytics`: read, export and prune the call database.

    hookline calls CONFIG [--limit N]          recent calls as a table
    hookline calls CONFIG show ID              one call: transcript and per-turn latencies
    hookline analytics export CONFIG DIR       Parquet files partitioned by day
    hookline analytics prune CONFIG --older-than DAYS

Every command also takes `--database PATH` instead of CONFIG. With CONFIG, `calls` and
`export` read the finished calls of every process from the Parquet segments folder
(`[analytics] segments`, see segments.py) once one exists: no lock, so they work while
servers run; `prune` works on the configured database file. User mistakes raise
ConfigError, which the core CLI prints as one line.
"""

from __future__ import annotations

import argparse
import re
import socket
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from ..config import load_config
from ..errors import ConfigError
from .rows import utc
from .schema import open_database
from .segments import has_segments, open_dataset, prune_segments

__all__ = ["add_commands", "export", "prune"]

# What `calls show` prints for each latency metric, in this order.
METRIC_LABELS = {
    "voice_to_voice": "voice-to-voice",
    "stt_final": "stt final",
    "end_of_turn_delay": "end of turn",
    "llm_first_token": "llm first token",
    "tts_first_byte": "tts first byte",
    "tool": "tool",
    "runtime_overhead": "overhead",
    "loop_lag": "of which loop lag",
}


def _out(text: str) -> None:
    """Command output goes to stdout; logs go through logging."""
    sys.stdout.write(text + "\n")


def add_commands(subparsers: Any) -> None:
    calls = subparsers.add_parser(
        "calls",
        help="recent calls from the analytics database",
        usage="hookline calls (CONFIG | --database PATH) [--limit N] [show ID]",
        description="List recent calls, or show one call's transcript with per-turn latencies.",
    )
    calls.add_argument("args", nargs="*", metavar="CONFIG [show ID]")
    calls.add_argument("--database", metavar="PATH", help="a DuckDB file instead of CONFIG")
    calls.add_argument("--limit", type=int, default=20, help="how many calls (default 20)")
    calls.set_defaults(func=_calls_command)

    analytics = subparsers.add_parser("analytics", help="export or prune the analytics database")
    sub = analytics.add_subparsers(dest="analytics_command", metavar="COMMAND", required=True)
    exp = sub.add_parser(
        "export",
        help="write every table as Parquet partitioned by day",
        usage="hookline analytics export (CONFIG | --database PATH) DIR",
    )
    exp.add_argument("args", nargs="+", metavar="CONFIG DIR")
    exp.add_argument("--database", metavar="PATH", help="a DuckDB file instead of CONFIG")
    exp.set_defaults(func=_export_command)
    pr = sub.add_parser(
        "prune",
        help="delete calls older than N days",
        usage="hookline analytics prune (CONFIG | --database PATH) --older-than DAYS",
    )
    pr.add_argument("args", nargs="*", metavar="CONFIG")
    pr.add_argument("--database", metavar="PATH", help="a DuckDB file instead of CONFIG")
    pr.add_argument("--older-than", type=float, required=True, metavar="DAYS")
    pr.set_defaults(func=_prune_command)


# ---------------------------------------------------------------------------- helpers


def _target(args: argparse.Namespace, command: str) -> tuple[Path, str, list[str], Path | None]:
    """(database path, config file for messages, the positionals after CONFIG, the
    segments folder when CONFIG names one)."""
    rest = list(args.args)
    if args.database:
        return Path(args.database), "", rest, None
    if not rest:
        raise ConfigError(f"hookline {command}: give a CONFIG file or --database PATH")
    config = load_config(rest[0])
    database = config.resolve_path(config.analytics.database)
    return database, config.path, rest[1:], config.analytics_segments


def _open(path: Path, where: str) -> duckdb.DuckDBPyConnection:
    return open_database(path, create=False, where=where)


def _open_for_reading(path: Path, where: str, segments: Path | None) -> duckdb.DuckDBPyConnection:
    """Every process's finished calls when there are segments; else the database file."""
    if segments is not None and has_segments(segments):
        return open_dataset(segments)
    return _open(path, where)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for r in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    return "\n".join(line.rstrip() for line in lines)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, float):
        return f"{v:.1f}"
    text = str(v)
    return text if len(text) <= 26 else text[:23] + "..."


# ---------------------------------------------------------------------------- calls


def _calls_command(args: argparse.Namespace) -> int:
    path, where, rest, segments = _target(args, "calls")
    if rest and rest[0] == "show":
        if len(rest) != 2:
            raise ConfigError("usage: hookline calls CONFIG show ID")
        con = _open_for_reading(path, where, segments)
        try:
            _out(show_call(con, rest[1]))
        finally:
            con.close()
        return 0
    if rest:
        raise ConfigError(f"unexpected {' '.join(rest)!r} (did you mean `show ID`?)")
    if args.limit < 1:
        raise ConfigError("--limit must be at least 1")
    con = _open_for_reading(path, where, segments)
    try:
        _out(list_calls(con, args.limit))
    finally:
        con.close()
    return 0


def list_calls(con: duckdb.DuckDBPyConnection, limit: int = 20) -> str:
    rows = con.execute(
        """
        SELECT id, started, round(duration_s, 1), from_number,
               coalesce(end_reason, 'active'), turns, interrupted_turns,
               printf('%.4f', cost_usd)
        FROM calls ORDER BY started DESC LIMIT ?
        """,
        [limit],
    ).fetchall()
    if not rows:
        return "no calls recorded yet"
    headers = ("id", "started (UTC)", "secs", "from", "end", "turns", "barge-ins", "cost $")
    return _table(headers, rows)


def show_call(con: duckdb.DuckDBPyConnection, call_id: str) -> str:
    matches = con.execute(
        "SELECT id FROM calls WHERE id = ? OR starts_with(id, ?) ORDER BY id = ? DESC, id",
        [call_id, call_id, call_id],
    ).fetchall()
    if not matches:
        raise ConfigError(f"no call with id {call_id!r} (see `hookline calls`)")
    if len(matches) > 1 and matches[0][0] != call_id:
        raise ConfigError(
            f"{call_id!r} matches {len(matches)} calls; give more of the id "
            f"({', '.join(m[0] for m in matches[:3])}, ...)"
        )
    cid = matches[0][0]
    ((pcid, started, dur, frm, to, reason, providers, models, cost),) = con.execute(
        """SELECT provider_call_id, started, duration_s, from_number, to_number,
                  coalesce(end_reason, 'active'), providers, models, cost_usd
           FROM calls WHERE id = ?""",
        [cid],
    ).fetchall()
    out = [
        f"call {cid}  ({pcid or 'no provider id'})",
        f"  {frm or '(number not stored)'} -> {to or '-'}",
        f"  started {_cell(started)} UTC, {_cell(dur)} s, ended: {reason}",
    ]
    if providers:
        names = ", ".join(
            f"{k}={v}" + (f" ({models[k]})" if models and k in models else "")
            for k, v in sorted(providers.items())
        )
        out.append(f"  providers: {names}")
    if cost is not None:
        out.append(f"  estimated cost: ${cost:.4f}")
    lat: dict[int, dict[str, float]] = {}
    for turn, metric, ms in con.execute(
        "SELECT turn, metric, ms FROM latencies WHERE call_id = ?", [cid]
    ).fetchall():
        lat.setdefault(turn, {})[metric] = ms
    tools: dict[int, list[tuple[Any, ...]]] = {}
    for row in con.execute(
        "SELECT turn, tool, arguments, ok, error, latency_ms FROM tool_calls "
        "WHERE call_id = ? ORDER BY ts, tool_call_id",
        [cid],
    ).fetchall():
        tools.setdefault(row[0], []).append(row[1:])
    turns = con.execute(
        "SELECT turn, role, text, heard_text, interrupted FROM turns WHERE call_id = ? "
        "ORDER BY turn",
        [cid],
    ).fetchall()
    out.append("")
    if not turns:
        out.append("  (no turns recorded)")
    for turn, role, text, heard, interrupted in turns:
        who = "caller" if role == "user" else "agent "
        out.append(f"  [{turn}] {who}: {text if text is not None else '(transcript off)'}")
        if interrupted:
            shown = heard if heard is not None else "(transcript off)"
            out.append(f"      interrupted; the caller heard: {shown}")
        for tool, arguments, ok, error, ms in tools.get(turn, []):
            status = "ok" if ok else f"failed: {error}"
            out.append(f"      tool {tool}({arguments or ''}) {status}, {_cell(ms)} ms")
        if turn in lat:
            parts = [
                f"{label} {lat[turn][m]:.0f}"
                for m, label in METRIC_LABELS.items()
                if m in lat[turn]
            ]
            out.append(f"      latency ms: {', '.join(parts)}")
    return "\n".join(out)


# ---------------------------------------------------------------------------- export


def _export_command(args: argparse.Namespace) -> int:
    path, where, rest, segments = _target(args, "analytics export")
    if len(rest) != 1:
        raise ConfigError("usage: hookline analytics export (CONFIG | --database PATH) DIR")
    con = _open_for_reading(path, where, segments)
    whole = segments is not None and has_segments(segments)
    try:
        source = "segments" if whole else f"{socket.gethostname()}-{path.stem}"
        counts = export(con, Path(rest[0]), source=source)
    finally:
        con.close()
    _out(", ".join(f"{n} {t}" for t, n in counts.items()) + f" exported to {rest[0]}")
    return 0


# Each table with the UTC day its call started: the partition key.
_DAY_OF_CALL = (
    "SELECT x.*, CAST(c.started AS DATE) AS day FROM {} x JOIN calls c ON c.id = x.call_id"
)
_EXPORTS = {
    "calls": "SELECT *, CAST(started AS DATE) AS day FROM calls",
    "turns": _DAY_OF_CALL.format("turns"),
    "latencies": _DAY_OF_CALL.format("latencies"),
    "tool_calls": _DAY_OF_CALL.format("tool_calls"),
    "call_summaries": _DAY_OF_CALL.format("call_summaries"),
    "recordings": "SELECT x.*, CAST(coalesce(c.started, x.received) AS DATE) AS day "
    "FROM recordings x LEFT JOIN calls c ON c.id = x.call_id",
    # Events of no known call (a late status callback) go by their own time.
    "events": "SELECT x.*, CAST(coalesce(c.started, x.ts) AS DATE) AS day "
    "FROM events x LEFT JOIN calls c ON c.id = x.call_id",
}


def export(con: duckdb.DuckDBPyConnection, directory: Path, *, source: str) -> dict[str, int]:
    """Write `DIR/<table>/day=YYYY-MM-DD/<source>_N.parquet` for every table.

    `source` names this database in the file names, so exports of several processes or
    machines can share one directory and be read together with read_parquet; exporting
    the same database again replaces its own files and leaves the others alone.
    """
    tag = re.sub(r"[^A-Za-z0-9_.-]", "_", source)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create {directory}: {e.strerror}") from None
    counts = {}
    for table, query in _EXPORTS.items():
        ((n,),) = con.execute(f"SELECT count(*) FROM ({query})").fetchall()
        counts[table] = int(n)
        if not n:
            continue
        target = str(directory / table).replace("'", "''")
        con.execute(
            f"COPY ({query}) TO '{target}' (FORMAT parquet, PARTITION_BY (day), "
            f"OVERWRITE_OR_IGNORE true, FILENAME_PATTERN '{tag}_{{i}}')"
        ).fetchall()
    return counts


# ---------------------------------------------------------------------------- prune

# A century: further back is before any call, and keeps the cutoff a valid datetime.
MAX_PRUNE_DAYS = 36600


def _prune_command(args: argparse.Namespace) -> int:
    path, where, rest, segments = _target(args, "analytics prune")
    if rest:
        raise ConfigError(f"unexpected {' '.join(rest)!r}")
    if not 0 <= args.older_than <= MAX_PRUNE_DAYS:  # also refuses nan and inf
        raise ConfigError(
            f"--older-than takes a number of days, 0 or more and at most {MAX_PRUNE_DAYS}"
        )
    con = _open(path, where)
    try:
        counts = prune(con, args.older_than)
    finally:
        con.close()
    gone = ""
    if segments is not None:
        cutoff = utc(time.time() - args.older_than * 86400)
        gone = f"; {prune_segments(segments, cutoff)} segments removed from {segments}"
    _out(
        f"pruned {counts['calls']} calls older than {args.older_than:g} days "
        f"({', '.join(f'{n} {t}' for t, n in counts.items() if t != 'calls')}){gone}"
    )
    return 0


def prune(
    con: duckdb.DuckDBPyConnection, older_than_days: float, *, now: float | None = None
) -> dict[str, int]:
    """Delete finished calls that started more than N days ago, with all their rows.

    Calls still active are kept whatever their age; events with no call are pruned by
    their own time.
    """
    cutoff = utc((now or time.time()) - older_than_days * 86400)
    counts: dict[str, int] = {}
    con.begin()
    try:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE doomed AS "
            "SELECT id FROM calls WHERE started < ? AND end_reason IS NOT NULL",
            [cutoff],
        ).fetchall()
        for table in ("turns", "latencies", "tool_calls", "call_summaries"):
            ((n,),) = con.execute(
                f"DELETE FROM {table} WHERE call_id IN (SELECT id FROM doomed)"
            ).fetchall()
            counts[table] = int(n)
        # A recording's row (SID, URL) goes with its call; one no call claimed, by its age.
        ((n,),) = con.execute(
            "DELETE FROM recordings WHERE call_id IN (SELECT id FROM doomed) "
            "OR (call_id = '' AND received < ?)",
            [cutoff],
        ).fetchall()
        counts["recordings"] = int(n)
        ((n,),) = con.execute(
            "DELETE FROM events WHERE call_id IN (SELECT id FROM doomed) "
            "OR (call_id = '' AND ts < ?)",
            [cutoff],
        ).fetchall()
        counts["events"] = int(n)
        ((n,),) = con.execute("DELETE FROM calls WHERE id IN (SELECT id FROM doomed)").fetchall()
        counts = {"calls": int(n), **counts}
        con.execute("DROP TABLE doomed").fetchall()
        con.commit()
    except BaseException:
        con.rollback()
        raise
    con.execute("CHECKPOINT").fetchall()
    return counts

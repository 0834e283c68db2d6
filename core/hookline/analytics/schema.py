"""The analytics schema: tables, forward migrations and the analyst views.

`docs/analytics.md` documents every column. Times are naive `TIMESTAMP`s in UTC so a
"day" is the same whatever the reader's time zone. Migrations only ever move forward:
each step takes a file at version N to N+1 inside one transaction, and a fresh file runs
them all from zero, so the upgrade path is exercised on every new database too. Views
hold no data: they are recreated on every open, after the migrations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import duckdb

from ..errors import ConfigError

__all__ = [
    "SCHEMA_VERSION",
    "TABLES",
    "UPSERT_TABLES",
    "VIEWS",
    "migrate",
    "open_database",
    "schema_version",
]

log = logging.getLogger("hookline.analytics")

# v1: calls, turns, latencies, tool_calls.
V1 = """
CREATE TABLE calls (
    id VARCHAR PRIMARY KEY,
    provider_call_id VARCHAR,
    started TIMESTAMP NOT NULL,
    ended TIMESTAMP,
    duration_s DOUBLE,
    from_number VARCHAR,
    to_number VARCHAR,
    end_reason VARCHAR,
    turns INTEGER,
    providers MAP(VARCHAR, VARCHAR),
    llm_prompt_tokens BIGINT,
    llm_completion_tokens BIGINT,
    tts_characters BIGINT,
    stt_seconds DOUBLE,
    telephony_seconds DOUBLE,
    extra JSON
);
CREATE TABLE turns (
    call_id VARCHAR NOT NULL,
    turn INTEGER NOT NULL,
    role VARCHAR NOT NULL,
    text VARCHAR,
    heard_text VARCHAR,
    interrupted BOOLEAN NOT NULL,
    started TIMESTAMP,
    ended TIMESTAMP,
    duration_ms DOUBLE
);
CREATE TABLE latencies (
    call_id VARCHAR NOT NULL,
    turn INTEGER NOT NULL,
    ts TIMESTAMP,
    metric VARCHAR NOT NULL,
    ms DOUBLE NOT NULL
);
CREATE TABLE tool_calls (
    call_id VARCHAR NOT NULL,
    turn INTEGER NOT NULL,
    ts TIMESTAMP,
    tool_call_id VARCHAR,
    tool VARCHAR NOT NULL,
    arguments VARCHAR,
    ok BOOLEAN NOT NULL,
    error VARCHAR,
    result VARCHAR,
    latency_ms DOUBLE
);
"""

# v2: the per-call cost estimate, cached prompt tokens, models, a count of interrupted
# agent turns (backfilled from `turns`) and the raw events table.
V2 = """
ALTER TABLE calls ADD COLUMN interrupted_turns INTEGER;
ALTER TABLE calls ADD COLUMN models MAP(VARCHAR, VARCHAR);
ALTER TABLE calls ADD COLUMN llm_cached_tokens BIGINT;
ALTER TABLE calls ADD COLUMN cost_usd DOUBLE;
ALTER TABLE calls ADD COLUMN cost_llm_usd DOUBLE;
ALTER TABLE calls ADD COLUMN cost_tts_usd DOUBLE;
ALTER TABLE calls ADD COLUMN cost_stt_usd DOUBLE;
ALTER TABLE calls ADD COLUMN cost_telephony_usd DOUBLE;
UPDATE calls SET interrupted_turns = (
    SELECT count(*) FROM turns
    WHERE turns.call_id = calls.id AND turns.role = 'agent' AND turns.interrupted
) WHERE ended IS NOT NULL;
CREATE TABLE events (
    call_id VARCHAR NOT NULL,
    provider_call_id VARCHAR,
    seq BIGINT NOT NULL,
    ts TIMESTAMP NOT NULL,
    t DOUBLE NOT NULL,
    type VARCHAR NOT NULL,
    turn INTEGER,
    data JSON NOT NULL
);
"""

# v3: call recordings (from the telephony's recording callbacks) and post-call summaries.
# A recording is keyed by its provider SID (a repeated callback updates it); its call_id is
# '' when the callback named a call this database does not know.
V3 = """
CREATE TABLE recordings (
    recording_sid VARCHAR PRIMARY KEY,
    call_id VARCHAR NOT NULL,
    provider_call_id VARCHAR,
    status VARCHAR NOT NULL,
    duration_s DOUBLE,
    url VARCHAR,
    received TIMESTAMP NOT NULL
);
CREATE TABLE call_summaries (
    call_id VARCHAR PRIMARY KEY,
    status VARCHAR NOT NULL,
    reason VARCHAR,
    summary VARCHAR,
    reason_for_calling VARCHAR,
    outcome VARCHAR,
    vehicle VARCHAR,
    follow_up_needed BOOLEAN,
    follow_up VARCHAR,
    sentiment VARCHAR,
    model VARCHAR,
    llm_prompt_tokens BIGINT,
    llm_completion_tokens BIGINT,
    latency_ms DOUBLE,
    created TIMESTAMP NOT NULL
);
"""

MIGRATIONS: tuple[str, ...] = (V1, V2, V3)  # MIGRATIONS[n] takes version n to n+1
SCHEMA_VERSION = len(MIGRATIONS)

# Column order of each table as the writer appends it (the v2 layout: v1 columns, then
# the ones v2 added, since ALTER TABLE ADD COLUMN appends).
TABLES: dict[str, tuple[str, ...]] = {
    "calls": (
        "id", "provider_call_id", "started", "ended", "duration_s", "from_number",
        "to_number", "end_reason", "turns", "providers", "llm_prompt_tokens",
        "llm_completion_tokens", "tts_characters", "stt_seconds", "telephony_seconds",
        "extra", "interrupted_turns", "models", "llm_cached_tokens", "cost_usd",
        "cost_llm_usd", "cost_tts_usd", "cost_stt_usd", "cost_telephony_usd",
    ),
    "turns": (
        "call_id", "turn", "role", "text", "heard_text", "interrupted", "started", "ended",
        "duration_ms",
    ),
    "latencies": ("call_id", "turn", "ts", "metric", "ms"),
    "tool_calls": (
        "call_id", "turn", "ts", "tool_call_id", "tool", "arguments", "ok", "error",
        "result", "latency_ms",
    ),
    "events": ("call_id", "provider_call_id", "seq", "ts", "t", "type", "turn", "data"),
    "recordings": (
        "recording_sid", "call_id", "provider_call_id", "status", "duration_s", "url",
        "received",
    ),
    "call_summaries": (
        "call_id", "status", "reason", "summary", "reason_for_calling", "outcome", "vehicle",
        "follow_up_needed", "follow_up", "sentiment", "model", "llm_prompt_tokens",
        "llm_completion_tokens", "latency_ms", "created",
    ),
}  # fmt: skip
# Tables keyed by their first column: a later row with the same key replaces the earlier.
UPSERT_TABLES = frozenset({"calls", "recordings", "call_summaries"})

# "What happened to the call", from end_reason: the part before the colon.
_OUTCOME = "coalesce(split_part(end_reason, ':', 1), 'active')"

VIEWS: dict[str, str] = {
    "call_outcomes": f"""
        SELECT *, {_OUTCOME} AS outcome, CAST(started AS DATE) AS day FROM calls
    """,
    "daily_calls": """
        SELECT day,
               count(*) AS calls,
               count(*) FILTER (WHERE outcome IN ('caller_hangup', 'agent_hangup')) AS completed,
               count(*) FILTER (WHERE outcome = 'transferred') AS transferred,
               count(*) FILTER (WHERE outcome = 'rejected') AS rejected,
               count(*) FILTER (WHERE outcome IN ('provider_failed', 'error')) AS failed,
               count(*) FILTER (WHERE outcome = 'interrupted') AS interrupted,
               count(*) FILTER (WHERE outcome = 'active') AS active,
               round(avg(duration_s) FILTER (WHERE outcome <> 'rejected'), 1) AS avg_duration_s,
               round(sum(duration_s) / 60, 1) AS minutes
        FROM call_outcomes GROUP BY day
    """,
    "daily_outcomes": """
        SELECT day, outcome, end_reason, count(*) AS calls
        FROM call_outcomes GROUP BY ALL
    """,
    "latency_percentiles": """
        SELECT CAST(ts AS DATE) AS day, metric, count(*) AS n,
               round(quantile_cont(ms, 0.5), 1) AS p50_ms,
               round(quantile_cont(ms, 0.9), 1) AS p90_ms,
               round(quantile_cont(ms, 0.99), 1) AS p99_ms,
               round(max(ms), 1) AS max_ms
        FROM latencies GROUP BY ALL
    """,
    "tool_success": """
        SELECT tool, count(*) AS calls,
               count(*) FILTER (WHERE ok) AS ok,
               count(*) FILTER (WHERE NOT ok) AS failed,
               round(avg(CAST(ok AS INTEGER)), 3) AS success_rate,
               round(quantile_cont(latency_ms, 0.5), 1) AS p50_latency_ms,
               round(quantile_cont(latency_ms, 0.9), 1) AS p90_latency_ms
        FROM tool_calls GROUP BY tool
    """,
    "daily_cost": """
        SELECT day, count(*) AS calls,
               round(sum(cost_usd), 4) AS cost_usd,
               round(sum(cost_usd) / nullif(count(cost_usd), 0), 4) AS cost_per_call_usd,
               round(sum(cost_usd) / nullif(sum(duration_s) / 60, 0), 4) AS cost_per_minute_usd,
               round(sum(cost_llm_usd), 4) AS llm_usd,
               round(sum(cost_tts_usd), 4) AS tts_usd,
               round(sum(cost_stt_usd), 4) AS stt_usd,
               round(sum(cost_telephony_usd), 4) AS telephony_usd
        FROM call_outcomes GROUP BY day
    """,
    "interruptions": """
        SELECT CAST(c.started AS DATE) AS day,
               count(DISTINCT t.call_id) AS calls,
               count(*) AS agent_turns,
               count(*) FILTER (WHERE t.interrupted) AS interrupted_turns,
               round(avg(CAST(t.interrupted AS INTEGER)), 3) AS interruption_rate,
               count(DISTINCT t.call_id) FILTER (WHERE t.interrupted) AS calls_with_barge_in
        FROM turns t JOIN calls c ON c.id = t.call_id
        WHERE t.role = 'agent' GROUP BY ALL
    """,
}


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """The version a database is at; 0 for an empty file."""
    # fetchall, not fetchone: duckdb 2 refuses the next statement while a result is unread.
    ((has,),) = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
    ).fetchall()
    if not has:
        return 0
    ((version,),) = con.execute("SELECT max(version) FROM schema_version").fetchall()
    return int(version or 0)


def migrate(
    con: duckdb.DuckDBPyConnection,
    target: int = SCHEMA_VERSION,
    *,
    where: str = "",
    on_step: Callable[[int], None] | None = None,
) -> int:
    """Apply the forward migrations up to `target`; return the version found on open."""
    found = schema_version(con)
    if found > SCHEMA_VERSION:
        raise ConfigError(
            f"the analytics database is at schema version {found}, newer than this hookline "
            f"({SCHEMA_VERSION}); upgrade hookline or use another database file",
            key="analytics.database",
            file=where or None,
        )
    for version in range(found, target):
        con.begin()
        try:
            if version == 0:
                con.execute(
                    "CREATE TABLE schema_version (version INTEGER NOT NULL, applied TIMESTAMP)"
                )
            con.execute(MIGRATIONS[version])
            con.execute(
                "INSERT INTO schema_version VALUES (?, CAST(now() AS TIMESTAMP))", [version + 1]
            )
            con.commit()
        except BaseException:
            con.rollback()
            raise
        log.info("analytics schema migrated to version %d", version + 1)
        if on_step:
            on_step(version + 1)
    if target == SCHEMA_VERSION:
        create_views(con)
    return found


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    con.begin()  # one commit for all of them: each commit is a disk sync
    try:
        for name, sql in VIEWS.items():
            con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
        con.commit()
    except BaseException:
        con.rollback()
        raise


def open_database(
    path: str | Path, *, create: bool = True, where: str = ""
) -> duckdb.DuckDBPyConnection:
    """Open (or create) an analytics database and bring it to the current schema.

    User-facing failures (missing file, locked by another process, a directory that does
    not exist) raise ConfigError with the path and what to do.
    """
    p = Path(path)
    if not create and not p.exists():
        raise ConfigError(
            f"no analytics database at {p} (no call recorded yet, or a different path)",
            file=where or None,
            key="analytics.database" if where else None,
        )
    if create:
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(
                f"cannot create the directory for {p}: {e.strerror}",
                file=where or None,
                key="analytics.database",
            ) from None
    try:
        con = duckdb.connect(str(p))
    except duckdb.IOException as e:
        text = str(e)
        if "lock" in text.lower():
            raise ConfigError(
                f"{p} is in use by another process (DuckDB allows one writer; stop that "
                f"hookline or give this process its own database file)",
                file=where or None,
                key="analytics.database",
            ) from None
        raise ConfigError(
            f"cannot open {p}: {text}", file=where or None, key="analytics.database"
        ) from None
    try:
        migrate(con, where=where)
    except BaseException:
        con.close()
        raise
    return con

"""The analytics schema: tables, forward migrations and the analyst views.

`docs/analytics.md` documents every column. Times are naive `TIMESTAMP`s in UTC so a
"day" is the same whatever the reader's time zone. Migrations only ever move forward:
each step takes a file at version N to N+1 inside one transaction, and a fresh file runs
them all from zero, so the upgrade path is exercised on every new database too. Views
hold no data: they are recreated on every open, after the migrations, and every table,
column and view is then given its comment (`COMMENT ON`), so the schema explains itself
in any SQL client (`SELECT table_name, column_name, comment FROM duckdb_columns()`).

A new file is written in DuckDB storage format `STORAGE_VERSION`, not the running
library's newest: the format is fixed when the file is created, and older DuckDB builds
(the CLI an analyst has installed) refuse a newer one outright.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import duckdb

from ..errors import ConfigError

__all__ = [
    "COMMENTS",
    "SCHEMA_VERSION",
    "STORAGE_VERSION",
    "TABLES",
    "UPSERT_TABLES",
    "VIEWS",
    "connect",
    "migrate",
    "open_database",
    "schema_version",
    "storage_version",
]

log = logging.getLogger("hookline.analytics")

# The storage format new files are written in: DuckDB 1.4 (the long-term-support line)
# and every later release reads it, the Python package and the CLI alike, including
# every `duckdb-cli` on PyPI. The newest format would lock out all but the newest readers.
# Raise it only together with the reader named in docs/analytics.md.
STORAGE_VERSION = "v1.4.0"

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

# v4: finished calls committed here whose Parquet segment (see segments.py) is not yet
# written; filled in the transaction that writes a call's last row, emptied once its
# segment file is in place, so a crash between the two writes the segment at next start.
V4 = """
CREATE TABLE segment_pending (call_id VARCHAR PRIMARY KEY);
"""

MIGRATIONS: tuple[str, ...] = (V1, V2, V3, V4)  # MIGRATIONS[n] takes version n to n+1
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


# What every table, view and column means: applied with COMMENT ON on every open, so
# `duckdb_tables()`, `duckdb_views()` and `duckdb_columns()` (and any SQL client's
# schema browser) carry the meaning of each. docs/analytics.md says the same at length.
# {relation: (its comment, {column: comment})}; a view's columns not listed here take
# the comment of the same-named column in _VIEW_COLUMNS, then in `calls`.
_CALL_COLUMNS = {
    "id": "hookline's call id",
    "provider_call_id": "the telephony provider's id for the call (Twilio CallSid)",
    "started": "when the call started (UTC)",
    "ended": "when the call ended (UTC); NULL while active or if the process died",
    "duration_s": "ended - started, in seconds",
    "from_number": "the caller's number: as-is, HMAC-SHA256 hex, or NULL (caller_numbers)",
    "to_number": "the number called: as-is, HMAC-SHA256 hex, or NULL (caller_numbers)",
    "end_reason": "how the call ended: caller_hangup, agent_hangup, transferred, silence, "
    "max_duration, provider_failed:<kind/name>, shutdown, rejected:<why>, error:<what>, "
    "interrupted; NULL while active",
    "turns": "turns in the conversation (caller and agent, greeting included)",
    "providers": "provider name by kind, e.g. providers['llm'] = 'openai'",
    "llm_prompt_tokens": "LLM prompt tokens (cached tokens included)",
    "llm_completion_tokens": "LLM completion tokens",
    "tts_characters": "characters synthesized",
    "stt_seconds": "seconds of audio sent to speech-to-text",
    "telephony_seconds": "billed call time in seconds",
    "extra": "anything else the engine recorded (JSON)",
    "interrupted_turns": "agent turns the caller barged into",
    "models": "the model setting of each provider that has one, by kind",
    "llm_cached_tokens": "LLM prompt tokens served from the provider's cache",
    "cost_usd": "estimated cost in US dollars: the sum of the four cost_*_usd columns",
    "cost_llm_usd": "estimated LLM cost in US dollars, from [prices] at the time of the call",
    "cost_tts_usd": "estimated text-to-speech cost in US dollars",
    "cost_stt_usd": "estimated speech-to-text cost in US dollars",
    "cost_telephony_usd": "estimated telephony cost in US dollars (the call's length when "
    "the provider reported no billed seconds)",
}

COMMENTS: dict[str, tuple[str, dict[str, str]]] = {
    "calls": ("one row per call: who, when, how it ended, usage and cost", _CALL_COLUMNS),
    "turns": (
        "one row per turn of a call, caller and agent (the greeting is turn 0)",
        {
            "call_id": "calls.id",
            "turn": "0, 1, 2, ... in order",
            "role": "user or agent",
            "text": "what the caller said (joined finals) or what the LLM said; NULL "
            "when transcripts = false",
            "heard_text": "agent turns: what reached the caller's ear (differs when "
            "interrupted); NULL when transcripts = false",
            "interrupted": "the caller barged in on this agent turn",
            "started": "when the turn started (UTC)",
            "ended": "when the turn ended (UTC)",
            "duration_ms": "how long the turn ran, in milliseconds",
        },
    ),
    "latencies": (
        "one row per latency metric per agent turn; a metric that did not happen has no row",
        {
            "call_id": "calls.id",
            "turn": "the agent turn (turns.turn)",
            "ts": "when that turn started (UTC)",
            "metric": "stt_final, end_of_turn_delay, llm_first_token, tts_first_byte, tool, "
            "voice_to_voice, runtime_overhead, loop_lag (see docs/analytics.md)",
            "ms": "the latency in milliseconds",
        },
    ),
    "tool_calls": (
        "one row per tool call the LLM made",
        {
            "call_id": "calls.id",
            "turn": "the agent turn that called the tool",
            "ts": "when that turn started (UTC)",
            "tool_call_id": "the LLM's id for the call",
            "tool": "the tool's name",
            "arguments": "the JSON arguments as the LLM sent them (query with "
            "arguments::JSON); NULL when transcripts = false",
            "ok": "the tool succeeded",
            "error": "why the tool failed",
            "result": "what the tool returned to the LLM; NULL when transcripts = false",
            "latency_ms": "how long the tool ran, in milliseconds",
        },
    ),
    "events": (
        "the raw typed events of every call (when [analytics] events = true)",
        {
            "call_id": "calls.id; '' for a telephony status that arrived after its call",
            "provider_call_id": "the telephony provider's id for the call",
            "seq": "order of arrival, increasing within a database",
            "ts": "wall clock when the event was recorded (UTC)",
            "t": "the event's own monotonic time (trio.current_time()), for intervals "
            "within a call",
            "type": "the event type, a class in hookline.events (e.g. UserTurnEnded)",
            "turn": "the turn the event belongs to, when it has one",
            "data": "the whole event as JSON (msgspec.json.decode(data, "
            "type=hookline.events.CallEvent) gives it back)",
        },
    ),
    "recordings": (
        "one row per call recording the telephony provider reported ([recording] enabled)",
        {
            "recording_sid": "the provider's id of the recording (Twilio RE...)",
            "call_id": "calls.id",
            "provider_call_id": "the telephony provider's id for the call",
            "status": "the provider's recording status (completed, absent, ...)",
            "duration_s": "length of the recording in seconds",
            "url": "where the provider serves the recording (needs the account's credentials)",
            "received": "when the recording callback arrived (UTC)",
        },
    ),
    "call_summaries": (
        "one row per ended call: the post-call summary the LLM wrote, or why it was skipped",
        {
            "call_id": "calls.id",
            "status": "done, or skipped (see reason)",
            "reason": "why the summary was skipped (LLM failed, timed out, no caller turns...)",
            "summary": "a short summary of the call",
            "reason_for_calling": "why the caller called, in a few words",
            "outcome": "what the call achieved (booked, message taken, answered, ...)",
            "vehicle": "the caller's vehicle, when mentioned",
            "follow_up_needed": "whether someone at the shop must follow up",
            "follow_up": "what the follow-up is",
            "sentiment": "the caller's sentiment (positive, neutral, negative)",
            "model": "the LLM model that wrote the summary",
            "llm_prompt_tokens": "prompt tokens of the summary request",
            "llm_completion_tokens": "completion tokens of the summary request",
            "latency_ms": "how long the summary request took in milliseconds",
            "created": "when the summary was written (UTC)",
        },
    ),
    "segment_pending": (
        "finished calls whose Parquet segment ([analytics] segments) is not written yet",
        {"call_id": "calls.id"},
    ),
    "schema_version": (
        "one row per schema migration applied to this file",
        {
            "version": "the schema version the migration reached",
            "applied": "when the migration ran (UTC)",
        },
    ),
    "call_outcomes": ("calls, plus the outcome and the day", {}),
    "daily_calls": ("per day: calls by outcome, average duration, minutes", {}),
    "daily_outcomes": ("per day and end_reason: the number of calls", {}),
    "latency_percentiles": (
        "per day and latency metric: count, p50, p90, p99 and max in milliseconds",
        {"n": "the number of measurements"},
    ),
    "tool_success": (
        "per tool: calls, successes, failures, success rate, p50 and p90 latency",
        {
            "calls": "times the tool was called",
            "ok": "calls that succeeded",
            "failed": "calls that failed",
        },
    ),
    "daily_cost": (
        "per day: estimated cost, per call, per minute and by provider kind (US dollars)",
        {"cost_usd": "estimated cost of the day's calls in US dollars"},
    ),
    "interruptions": (
        "per day: agent turns, barged-into turns, interruption rate, calls with a barge-in",
        {
            "calls": "calls with at least one agent turn",
            "interrupted_turns": "agent turns the caller barged into",
        },
    ),
}

# Columns that mean the same in every view that has them.
_VIEW_COLUMNS = {
    "outcome": "the part of end_reason before ':' (caller_hangup, transferred, "
    "rejected, ...); 'active' while the call runs",
    "day": "the day (UTC) the calls started",
    "calls": "the number of calls",
    "completed": "calls that ended by a hang-up (caller or agent)",
    "transferred": "calls handed to a person",
    "rejected": "calls refused at admission (all lines busy)",
    "failed": "calls ended by a provider failure or an error",
    "interrupted": "calls cut off by a process that died",
    "active": "calls still running (or whose end was never recorded)",
    "avg_duration_s": "average duration in seconds, rejected calls left out",
    "minutes": "total call minutes",
    "metric": "the latency metric (see latencies.metric)",
    "p50_ms": "median latency in milliseconds",
    "p90_ms": "90th percentile latency in milliseconds",
    "p99_ms": "99th percentile latency in milliseconds",
    "max_ms": "the largest latency in milliseconds",
    "tool": "the tool's name",
    "success_rate": "ok / calls, 0 to 1",
    "p50_latency_ms": "median tool run time in milliseconds",
    "p90_latency_ms": "90th percentile tool run time in milliseconds",
    "cost_per_call_usd": "cost_usd / calls that have a cost estimate",
    "cost_per_minute_usd": "cost_usd / call minutes",
    "llm_usd": "estimated LLM cost in US dollars",
    "tts_usd": "estimated text-to-speech cost in US dollars",
    "stt_usd": "estimated speech-to-text cost in US dollars",
    "telephony_usd": "estimated telephony cost in US dollars",
    "agent_turns": "agent turns",
    "interruption_rate": "interrupted_turns / agent_turns, 0 to 1",
    "calls_with_barge_in": "calls in which the caller barged in at least once",
}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def comment_everything(con: duckdb.DuckDBPyConnection) -> None:
    """COMMENT ON every table, view and column (inside the caller's transaction)."""
    kinds = dict(
        con.execute(
            "SELECT table_name, 'TABLE' FROM duckdb_tables() WHERE database_name = "
            "current_database() UNION ALL SELECT view_name, 'VIEW' FROM duckdb_views() "
            "WHERE NOT internal AND database_name = current_database()"
        ).fetchall()
    )
    for relation, (comment, columns) in COMMENTS.items():
        con.execute(f"COMMENT ON {kinds[relation]} {relation} IS {_quote(comment)}")
        names = [
            name
            for (name,) in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE database_name = "
                "current_database() AND table_name = ? ORDER BY column_index",
                [relation],
            ).fetchall()
        ]
        for name in names:
            text = columns.get(name) or _VIEW_COLUMNS.get(name) or _CALL_COLUMNS.get(name)
            if text is None:
                raise KeyError(f"no comment for {relation}.{name}: add one to COMMENTS")
            con.execute(f"COMMENT ON COLUMN {relation}.{name} IS {_quote(text)}")


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
        if on_step:
            on_step(version + 1)
    if found and target > found:  # an existing file brought forward: the operator's news
        log.info("analytics schema migrated from version %d to %d", found, target)
    elif target > found:  # a new file, or the in-memory schema `hookline calls` reads with
        log.debug("analytics schema created at version %d", target)
    if target == SCHEMA_VERSION:
        create_views(con)
    return found


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    con.begin()  # one commit for all of them: each commit is a disk sync
    try:
        for name, sql in VIEWS.items():
            con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
        comment_everything(con)  # a replaced view has lost its comments
        con.commit()
    except BaseException:
        con.rollback()
        raise


def connect(path: str | Path) -> duckdb.DuckDBPyConnection:
    """`duckdb.connect`, creating a missing file in storage format STORAGE_VERSION.

    The format is fixed when the file is created and kept by every later open, so the
    setting is given only to the connection that creates the file, which is closed at
    once: the lasting connection has DuckDB's default configuration, as any other
    `duckdb.connect(path)` in this process has (DuckDB refuses two configurations of one
    open file in a process).
    """
    if not Path(path).exists():
        config = {"storage_compatibility_version": STORAGE_VERSION}
        duckdb.connect(str(path), config=config).close()
    return duckdb.connect(str(path))


def storage_version(con: duckdb.DuckDBPyConnection) -> str:
    """The storage format of the open file, as DuckDB reports it (e.g. "v1.4.0+")."""
    ((version,),) = con.execute(
        "SELECT tags['storage_version'] FROM duckdb_databases() "
        "WHERE database_name = current_database()"
    ).fetchall()
    return str(version or "")


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.strip("v+").split(".") if part.isdigit())


def _warn_if_newer_storage(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """A file created before STORAGE_VERSION was set keeps the newest format: say so."""
    found = storage_version(con)
    if found and _version_tuple(found) > _version_tuple(STORAGE_VERSION):
        log.warning(
            "%s is in DuckDB storage format %s, which DuckDB releases older than that "
            "cannot open; to convert it (hookline stopped): duckdb -c \"ATTACH '%s' AS old; "
            "ATTACH 'new.duckdb' AS new (STORAGE_VERSION '%s'); COPY FROM DATABASE old TO new\"",
            path,
            found,
            path,
            STORAGE_VERSION,
        )


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
        con = connect(p)
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
        _warn_if_newer_storage(con, p)
    except BaseException:
        con.close()
        raise
    return con

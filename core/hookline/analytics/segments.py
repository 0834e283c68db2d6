"""Parquet segments: finished calls of every process, read as one dataset.

Each process writes its own DuckDB file (one writer per file), and ALSO copies every
finished call into an immutable Parquet segment in a folder all processes share
(`[analytics] segments`): `DIR/<table>/<process>-<seq>.parquet`, one file per table
per batch. A file is written under a temporary name that no reader's glob matches and
renamed into place, child tables first and `calls` last, so a reader never sees half a
file, and a call whose `calls` file is missing does not count.

Durability: the calls a segment must hold are listed in the database's
`segment_pending` table in the same transaction as their last rows, and taken off the
list only once their files are in place. A process killed in between writes them again
at its next start, under a new name; readers keep, for each call id, the segment whose
name sorts last (the process name starts with its start time, then a sequence number),
and only that segment's child rows, so nothing is counted twice.

Readers (`hookline calls`, `hookline analytics export`, `hookline dashboard CONFIG`) open
an in-memory DuckDB whose tables are views over `read_parquet(..., union_by_name=true)`:
they need no lock, so they work while every server runs.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from datetime import datetime
from pathlib import Path

import duckdb

from ..errors import ConfigError
from .schema import VIEWS, migrate

__all__ = [
    "SEGMENT_TABLES",
    "SegmentWriter",
    "has_segments",
    "open_dataset",
    "process_name",
    "prune_segments",
]

log = logging.getLogger("hookline.analytics")

# What a segment holds: a finished call's row and everything written at its end.
SEGMENT_TABLES = ("turns", "latencies", "tool_calls", "events", "calls")  # calls last
TMP_SUFFIX = ".tmp"


def process_name() -> str:
    """This process, unique across machines and restarts, sorting by start time."""
    host = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:40]
    return f"{int(time.time() * 1000):013d}-{host}-{os.getpid()}"


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


class SegmentWriter:
    """Writes the pending finished calls of one database (on the analytics writer's thread)."""

    def __init__(self, directory: Path, *, name: str | None = None) -> None:
        self.directory = directory
        self.name = name or process_name()
        self.seq = 0
        self.segments_written = 0

    def write(self, con: duckdb.DuckDBPyConnection) -> int:
        """One segment of every call in `segment_pending`; the number of calls written.

        Raises what writing raised (the calls stay pending for the next try)."""
        ((n,),) = con.execute("SELECT count(*) FROM segment_pending").fetchall()
        if not n:
            return 0
        ids = "(SELECT call_id FROM segment_pending)"
        self.seq += 1
        stem = f"{self.name}-{self.seq:06d}"
        written: list[tuple[Path, Path]] = []
        try:
            for table in SEGMENT_TABLES:
                key = "id" if table == "calls" else "call_id"
                query = f"SELECT * FROM {table} WHERE {key} IN {ids}"
                if table != "calls":
                    ((rows,),) = con.execute(f"SELECT count(*) FROM ({query})").fetchall()
                    if not rows:
                        continue
                folder = self.directory / table
                folder.mkdir(parents=True, exist_ok=True)
                final = folder / f"{stem}.parquet"
                tmp = folder / f".{stem}.parquet{TMP_SUFFIX}"
                con.execute(
                    f"COPY ({query}) TO '{_sql_path(tmp)}' (FORMAT parquet, COMPRESSION zstd)"
                ).fetchall()
                written.append((tmp, final))
            for tmp, final in written:  # `calls` is last: the segment counts from here
                os.replace(tmp, final)
        except BaseException:
            for tmp, _ in written:
                tmp.unlink(missing_ok=True)
            raise
        con.execute("DELETE FROM segment_pending").fetchall()
        self.segments_written += 1
        return int(n)


# ---------------------------------------------------------------------------- readers


def has_segments(directory: Path) -> bool:
    """Whether any process has written a segment to `directory` yet."""
    return "calls" in tables_with_segments(directory)


def tables_with_segments(directory: Path) -> frozenset[str]:
    """The tables with at least one segment in `directory`. `open_dataset` makes views
    over these (the others are empty tables): when this changes, open it again."""
    return frozenset(
        table
        for table in SEGMENT_TABLES
        if (folder := directory / table).is_dir() and any(folder.glob("*.parquet"))
    )


def open_dataset(directory: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB over every segment in `directory`, with the analytics schema.

    Tables with segments are views over their Parquet files (each call once: from the
    segment whose name sorts last); the others are empty tables of the schema; the
    analyst views (daily_calls, ...) are there too. Files appear between queries: each
    query reads the folder as it is then.
    """
    if not directory.is_dir():
        raise ConfigError(f"no analytics segments in {directory} (no call finished yet?)")
    con = duckdb.connect(":memory:")
    try:
        migrate(con)  # the schema's tables (empty) and views
        present = tables_with_segments(directory)
        if "calls" not in present:
            return con
        glob = _sql_path(directory / "calls" / "*.parquet")
        con.execute("DROP TABLE calls")
        # The winning segment of each call; `calls` and every child table follow it.
        con.execute(
            "CREATE VIEW _call_segments AS SELECT *, parse_filename(filename, true) AS _segment "
            f"FROM read_parquet('{glob}', union_by_name = true, filename = true) "
            "QUALIFY row_number() OVER (PARTITION BY id ORDER BY _segment DESC) = 1"
        )
        con.execute(
            "CREATE VIEW calls AS SELECT * EXCLUDE (filename, _segment) FROM _call_segments"
        )
        for table in SEGMENT_TABLES:
            if table == "calls" or table not in present:
                continue
            glob = _sql_path(directory / table / "*.parquet")
            con.execute(f"DROP TABLE {table}")
            con.execute(
                f"CREATE VIEW {table} AS SELECT x.* EXCLUDE (filename) FROM "
                f"read_parquet('{glob}', union_by_name = true, filename = true) x "
                "SEMI JOIN _call_segments s "
                "ON x.call_id = s.id AND parse_filename(x.filename, true) = s._segment"
            )
        for name, sql in VIEWS.items():  # bound again over the views above
            con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
    except BaseException:
        con.close()
        raise
    return con


def prune_segments(directory: Path, cutoff: datetime) -> int:
    """Delete every segment whose calls all started before `cutoff` (naive UTC), all its
    tables' files, `calls` first so no reader counts a half-deleted one. A segment with
    a newer call stays whole until that call is old too (segments are immutable; a
    segment spans a few seconds of finished calls). Returns the segments deleted."""
    if not has_segments(directory):
        return 0
    glob = _sql_path(directory / "calls" / "*.parquet")
    con = duckdb.connect(":memory:")
    try:
        stems = [
            stem
            for (stem,) in con.execute(
                "SELECT parse_filename(filename, true) FROM "
                f"read_parquet('{glob}', union_by_name = true, filename = true) "
                "GROUP BY ALL HAVING max(started) < ?",
                [cutoff],
            ).fetchall()
        ]
    finally:
        con.close()
    for stem in stems:
        for table in ("calls", *SEGMENT_TABLES[:-1]):
            (directory / table / f"{stem}.parquet").unlink(missing_ok=True)
    return len(stems)

"""`[tools.messages]`: where taken messages are kept."""

from __future__ import annotations

import msgspec

__all__ = ["MessageSettings"]


class MessageSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`database`: the DuckDB file, relative to the config file. One process writes it
    at a time (DuckDB's file lock); the store opens it only while it writes or reads, so
    `hookline messages` can read it while the server runs."""

    database: str = "data/messages.duckdb"

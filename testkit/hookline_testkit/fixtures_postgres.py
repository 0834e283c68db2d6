"""pytest fixtures for a real PostgreSQL server (imported into hookline's pytest plugin)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .postgres import PostgresServer

__all__ = ["postgres_server", "postgres_url"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole test session (started on first use: ~1-2 s),
    from Debian's `postgresql` binaries; fails with what to install when they are missing."""
    folder = Path(tempfile.mkdtemp(prefix="hookline-pg-"))
    try:
        server = PostgresServer.start(folder)
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a fresh, empty database on the session's PostgreSQL server."""
    return postgres_server.new_database()

"""hookline.Database on both engines: one transaction per run, $n parameters, Conflict,
and `session.lock` keeping check-then-write writers apart across processes' pools."""

from __future__ import annotations

import datetime as dt
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from hookline import ConfigError, Conflict, Database, ProviderUnavailable, Session, Storage

SCHEMA = """
CREATE TABLE IF NOT EXISTS slots (
    id VARCHAR PRIMARY KEY,
    slot INTEGER NOT NULL,
    booked_at TIMESTAMPTZ NOT NULL
);
"""


@pytest.fixture(params=["duckdb", "duckdb-held", "postgresql"])
def storage_factory(request, tmp_path: Path):
    """Makes the test table's Database as separate processes would have it (each its own
    Storage and pool); "duckdb-held" keeps the file open (one process, side by side)."""
    made: list[Storage] = []

    def make() -> Database:
        if request.param.startswith("duckdb"):
            s = Storage("duckdb")
        else:
            url = request.getfixturevalue("postgres_url")
            s = Storage("postgresql", url=url, pool_size=4)
        made.append(s)
        return s.database(
            file=tmp_path / "slots.duckdb",
            schema=SCHEMA,
            provider="test",
            held=request.param == "duckdb-held",
        )

    yield make
    for s in made:
        s.close()


def _insert(session: Session, id_: str, slot: int) -> None:
    session.execute(
        "INSERT INTO slots (id, slot, booked_at) VALUES ($1, $2, $3)",
        [id_, slot, dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC)],
    )


def test_a_run_is_one_transaction(storage_factory, tmp_path: Path) -> None:
    db = storage_factory()
    db.run_sync(_insert, "a", 1)

    def insert_then_fail(session: Session) -> None:
        _insert(session, "b", 2)
        raise RuntimeError("the tool failed after writing")

    with pytest.raises(RuntimeError):
        db.run_sync(insert_then_fail)
    rows = db.run_sync(lambda s: s.execute("SELECT id, slot, booked_at FROM slots ORDER BY id"))
    assert [(r[0], r[1]) for r in rows] == [("a", 1)]  # b was rolled back
    assert rows[0][2] == dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC)


def test_a_repeated_key_is_a_conflict(storage_factory, tmp_path: Path) -> None:
    db = storage_factory()
    db.run_sync(_insert, "a", 1)
    with pytest.raises(Conflict):
        db.run_sync(_insert, "a", 2)
    assert db.run_sync(lambda s: s.execute("SELECT count(*) FROM slots")) == [(1,)]


def test_lock_keeps_check_then_write_apart_across_processes(
    storage_factory, tmp_path: Path
) -> None:
    """8 writers on 2 storages (as 2 processes would have), each checking the slot is
    free, waiting, then writing: with the lock, exactly one wins each slot."""
    dbs = [storage_factory() for _ in range(2)]
    outcomes: list[bool] = []

    def book(session: Session, id_: str) -> bool:
        session.lock("slots")
        taken = session.execute("SELECT count(*) FROM slots WHERE slot = $1", [7])[0][0]
        time.sleep(0.02)  # the window a timing-based check would lose
        if taken:
            return False
        _insert(session, id_, 7)
        return True

    def writer(i: int) -> None:
        outcomes.append(dbs[i % 2].run_sync(book, f"w{i}"))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [False] * 7 + [True]
    assert dbs[0].run_sync(lambda s: s.execute("SELECT count(*) FROM slots")) == [(1,)]


async def test_run_from_trio_uses_a_worker_thread(storage_factory, tmp_path: Path) -> None:
    db = storage_factory()
    trio_thread = threading.get_ident()
    seen: list[int] = []

    def work(session: Session) -> int:
        seen.append(threading.get_ident())
        _insert(session, "x", 3)
        return 3

    assert await db.run(work) == 3
    assert seen and seen[0] != trio_thread


def test_an_unreachable_server_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    storage = Storage(
        "postgresql", url=f"postgresql://u:secret@127.0.0.1:{port}/shop", connect_timeout_s=1
    )
    db = storage.database(file=tmp_path / "slots.duckdb", schema=SCHEMA, provider="test")
    with pytest.raises(ProviderUnavailable) as err:
        db.run_sync(lambda s: s.execute("SELECT 1"))
    text = str(err.value)
    assert f"PostgreSQL 127.0.0.1:{port}/shop" in text
    assert "secret" not in text  # never the password
    storage.close()


def test_a_url_that_is_not_postgresql_is_a_config_error() -> None:
    from hookline import ConfigError

    with pytest.raises(ConfigError, match="postgresql://"):
        Storage("postgresql", url="mysql://x@h/db")


def test_schema_created_by_two_processes_at_once(storage_factory, tmp_path: Path) -> None:
    dbs = [storage_factory() for _ in range(4)]
    errors: list[BaseException] = []

    def first_use(db: Database) -> None:
        try:
            db.run_sync(lambda s: s.execute("SELECT count(*) FROM slots"))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=first_use, args=(db,)) for db in dbs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


HOLDER = """
import sys, time
from pathlib import Path
from hookline import Storage
db = Storage("duckdb").database(file=Path(sys.argv[1]), schema="SELECT 1", provider="x", held=True)
db.run_sync(lambda s: s.execute("SELECT 1"))
print("holding", flush=True)
time.sleep(60)
"""


def test_a_held_file_refuses_a_second_process_naming_postgresql(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "calendar.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        db = Storage("duckdb").database(file=path, schema=SCHEMA, provider="test", held=True)
        with pytest.raises(ProviderUnavailable) as err:
            db.run_sync(lambda s: s.execute("SELECT 1"))
        text = str(err.value)
        assert "open in another process" in text
        assert 'backend = "postgresql"' in text and "\n" not in text
    finally:
        holder.kill()
        holder.wait()


def test_held_stores_on_one_file_share_it_and_let_go_when_the_last_closes(
    tmp_path: Path,
) -> None:
    import duckdb

    path = tmp_path / "shared.duckdb"
    storage = Storage("duckdb")
    a = storage.database(file=path, schema=SCHEMA, provider="a", held=True)
    b = Storage("duckdb").database(file=path, schema=SCHEMA, provider="b", held=True)
    a.run_sync(_insert, "a", 1)
    assert b.run_sync(lambda s: s.execute("SELECT id FROM slots")) == [("a",)]
    b.close()
    assert a.run_sync(lambda s: s.execute("SELECT count(*) FROM slots")) == [(1,)]
    storage.close()  # lets go of a: the file is free for anyone
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM slots").fetchall() == [(1,)]


@pytest.mark.parametrize("missing", ["psycopg", "psycopg_pool"])
def test_postgresql_without_its_driver_is_a_one_line_config_error(
    missing: str, tmp_path: Path, monkeypatch
) -> None:
    # A deployer who chose the PostgreSQL backend without `hookline[postgresql]`
    # installed gets the one line naming the extra, not an import traceback.
    monkeypatch.setitem(sys.modules, missing, None)  # `import` then raises ImportError
    storage = Storage("postgresql", url="postgresql://hookline@127.0.0.1:9/none")
    db = storage.database(file=tmp_path / "x.duckdb", schema=SCHEMA, provider="test")
    with pytest.raises(ConfigError, match=r"pip install 'hookline\[postgresql\]'"):
        db.run_sync(_insert, "a", 1)
    storage.close()

"""`[storage] backend = "postgresql"`: a taken message, a tow request and their outbox
notifications are written to PostgreSQL (no DuckDB file appears) and delivered; the
CLIs read the same rows through the config's `[storage]`; `hookline check` names the
missing URL variable."""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg
import trio

from hookline.cli import main

sys.path.insert(0, str(Path(__file__).parent))

from outbox_helpers import DISPATCHER, call_tool, shop_runtime, tool_ctx, wait_settled

BASE = (
    '[agent]\nname = "Shop"\n[providers]\ntelephony = "twilio"\nstt = "deepgram"\n'
    'llm = "openai"\ntts = "deepgram"\n'
)


def _rows(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


async def test_message_and_tow_land_in_postgresql_and_are_delivered(
    tmp_path, twilio_rest, twilio_secrets, postgres_url
):
    secrets = {**twilio_secrets, "HOOKLINE_DATABASE_URL": postgres_url}
    runtime = shop_runtime(tmp_path, twilio_rest, secrets, storage={"backend": "postgresql"})
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runtime.outbox.run)
            taken = await call_tool(
                runtime, "take_message", name="Sam Rivera", reason="brake noise", urgency="urgent"
            )
            towed = await call_tool(
                runtime,
                "request_tow",
                tool_ctx(tool_call_id="tc-2"),
                location="I-90 exit 12",
                vehicle="blue 2015 Civic",
                problem="flat tire",
            )
            rows = await wait_settled(runtime)
            nursery.cancel_scope.cancel()
    finally:
        await runtime.aclose()

    # Committed in PostgreSQL before the tools answered ...
    assert _rows(postgres_url, "SELECT id, status FROM messages") == [(taken["message_id"], "new")]
    assert _rows(postgres_url, "SELECT reference, eta_minutes FROM tow_requests") == [
        (towed["reference"], 35)
    ]
    # ... and the notifications delivered from there: one text each to the dispatcher.
    stored = _rows(postgres_url, "SELECT kind, status, attempts FROM notifications ORDER BY kind")
    assert stored == [("message.taken", "sent", 1), ("tow.requested", "sent", 1)]
    assert {n.kind for n in rows} == {"message.taken", "tow.requested"}
    assert sorted(m.to for m in twilio_rest.messages) == [DISPATCHER, DISPATCHER]
    # No DuckDB file was made for these stores.
    for name in ("messages.duckdb", "tow.duckdb", "outbox.duckdb"):
        assert not (tmp_path / name).exists(), name


def test_the_clis_read_postgresql_through_the_config(tmp_path, capsys, monkeypatch, postgres_url):
    from hookline import Storage
    from hookline.outbox import Notification, OutboxStore, notification_id
    from hookline.outbox.store import SCHEMA

    storage = Storage("postgresql", url=postgres_url)
    try:
        db = storage.database(file=tmp_path / "unused", schema=SCHEMA, provider="outbox")
        key = "message:M1:sms"
        OutboxStore(db).add_sync(Notification(id=notification_id(key), key=key, channel="sms"))
    finally:
        storage.close()
    path = tmp_path / "shop.toml"
    path.write_text(
        BASE.replace('tts = "deepgram"\n', 'tts = "deepgram"\ntools = ["messages"]\n')
        + '[storage]\nbackend = "postgresql"\nurl_variable = "SHOP_DB_URL"\n'
    )
    monkeypatch.delenv("SHOP_DB_URL", raising=False)
    assert main(["outbox", str(path)]) == 1
    err = capsys.readouterr().err
    assert "storage.url_variable" in err and "SHOP_DB_URL" in err and err.count("\n") == 1

    monkeypatch.setenv("SHOP_DB_URL", postgres_url)
    assert main(["outbox", str(path)]) == 0
    out = capsys.readouterr().out
    assert notification_id(key) in out and "pending" in out
    assert main(["messages", str(path)]) == 0
    assert "no messages taken yet" in capsys.readouterr().out
    assert not list(tmp_path.glob("**/*.duckdb"))


def test_check_names_the_missing_database_url(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HOOKLINE_DATABASE_URL", raising=False)
    path = tmp_path / "shop.toml"
    path.write_text(BASE + '[storage]\nbackend = "postgresql"\n')
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if "HOOKLINE_DATABASE_URL" in line]
    assert line.startswith("missing secret:") and "storage.url_variable" in line

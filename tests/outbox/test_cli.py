"""`hookline outbox CONFIG` lists notifications with their status; `retry ID` requeues."""

from __future__ import annotations

import datetime as dt

from hookline.cli import main
from hookline.outbox import Notification, OutboxStore, notification_id


def _config(tmp_path) -> str:
    path = tmp_path / "shop.toml"
    path.write_text(
        '[agent]\nname = "Shop"\n[providers]\ntelephony = "twilio"\nstt = "deepgram"\n'
        'llm = "openai"\ntts = "deepgram"\n[outbox]\ndatabase = "box.duckdb"\n'
    )
    return str(path)


def test_lists_and_retries(tmp_path, capsys):
    config = _config(tmp_path)
    assert main(["outbox", config]) == 0
    assert "no notifications yet" in capsys.readouterr().out
    store = OutboxStore(tmp_path / "box.duckdb")
    for key, kind in (("booking:1:booked", "booking.booked"), ("message:M1:sms", "message.taken")):
        store.add_sync(Notification(id=notification_id(key), key=key, channel="sms", kind=kind))
    sent, failed = notification_id("booking:1:booked"), notification_id("message:M1:sms")
    store.record_attempt_sync(sent, "sent")
    store.record_attempt_sync(failed, "failed", "HTTP 400, code 21211: invalid number")
    assert main(["outbox", config]) == 0
    out = capsys.readouterr().out
    assert f"{sent}" in out and "booking.booked" in out and " sent " in out
    assert f"{failed}" in out and "failed" in out and "code 21211" in out
    assert main(["outbox", config, "--status", "failed"]) == 0
    out = capsys.readouterr().out
    assert failed in out and sent not in out

    assert main(["outbox", config, "retry", failed]) == 0
    assert "pending again" in capsys.readouterr().out
    row = store.get_sync(failed)
    assert row is not None and (row.status, row.attempts, row.last_error) == ("pending", 0, "")
    assert row.next_attempt is not None and row.next_attempt <= dt.datetime.now(dt.UTC)

    assert main(["outbox", config, "retry", "NNOPE"]) == 1
    assert "no notification 'NNOPE'" in capsys.readouterr().err

"""The signed webhook: a receiver using the doc's snippet accepts the real delivery,
refuses the same request replayed, a stale timestamp and a tampered body; taken messages
and tow requests reach it with the configured ETA."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import msgspec
import trio

from hookline.outbox.webhook import sign
from hookline.server import serve_asgi

sys.path.insert(0, str(Path(__file__).parent))

from outbox_helpers import DISPATCHER, call_tool, shop_runtime, wait_settled
from webhook_receiver import PATH, Receiver, doc_verifier_class

SECRET = "webhook-secret-0123456789"


async def test_receiver_verifies_and_refuses_a_replay(tmp_path, twilio_rest, twilio_secrets):
    receiver = Receiver(SECRET)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_asgi, receiver.app(), "127.0.0.1", 0)
        url = f"http://127.0.0.1:{port}{PATH}"
        runtime = shop_runtime(
            tmp_path,
            twilio_rest,
            {**twilio_secrets, "HOOKLINE_WEBHOOK_SECRET": SECRET},
            notifications={"webhook": {"url": url}},
        )
        nursery.start_soon(runtime.outbox.run)
        await call_tool(
            runtime, "take_message", name="Dana Lee", reason="quote for brakes", urgency="routine"
        )
        await call_tool(
            runtime,
            "request_tow",
            location="I-90 exit 12",
            vehicle="2015 Ford Focus, blue",
            problem="won't start",
        )
        rows = await wait_settled(runtime)
        assert {r.status for r in rows} == {"sent"} and len(rows) == 4  # 2 texts, 2 posts

        by_kind = {msgspec.json.decode(r.body)["kind"]: r for r in receiver.accepted}
        assert len(receiver.accepted) == 2
        message, tow = by_kind["message.taken"], by_kind["tow.requested"]
        assert message.verdict == tow.verdict == "ok"
        tow_body = msgspec.json.decode(tow.body)
        assert tow_body["kind"] == "tow.requested"
        assert tow_body["payload"]["eta_minutes"] == 35  # from [tools.tow_requests]
        assert "told ETA 35 min" in tow_body["text"]
        assert msgspec.json.decode(message.body)["payload"]["reason"] == "quote for brakes"

        async with httpx.AsyncClient() as client:
            # The captured request, replayed as it was: refused by its id.
            replay = await client.post(url, content=message.body, headers=message.headers)
            assert replay.status_code == 409
            # Re-signed with a timestamp 10 minutes old: outside the replay window.
            old = str(int(time.time()) - 600)
            stale = {**message.headers, "x-hookline-timestamp": old}
            stale["x-hookline-signature"] = sign(SECRET, old, message.body)
            stale["x-hookline-id"] = "N-OTHER"
            assert (await client.post(url, content=message.body, headers=stale)).status_code == 401
            # A body changed in flight no longer matches its signature.
            tampered = message.body.replace(b"brakes", b"engine")
            resp = await client.post(url, content=tampered, headers=message.headers)
            assert resp.status_code == 401
        nursery.cancel_scope.cancel()
    assert [r.verdict for r in receiver.received[-3:]] == [
        "replay",
        "outside the replay window",
        "bad signature",
    ]
    texts = [m for m in twilio_rest.messages if m.to == DISPATCHER]
    assert len(texts) == 2 and any("ETA 35 min" in m.body for m in texts)


def test_doc_snippet_matches_the_signer():
    verifier = doc_verifier_class()(SECRET)
    now = 1_800_000_000
    body = b'{"id":"N1"}'
    headers = {
        "X-Hookline-Id": "N1",
        "X-Hookline-Timestamp": str(now),
        "X-Hookline-Signature": sign(SECRET, str(now), body),
    }
    assert verifier.verify(headers, body, now=now + 299) == "ok"
    assert verifier.verify(headers, body, now=now + 299) == "replay"
    assert verifier.verify(headers, body, now=now + 301) == "outside the replay window"
    assert doc_verifier_class()("other").verify(headers, body, now=now) == "bad signature"


async def test_a_down_receiver_is_retried_then_failed_without_touching_others(
    tmp_path, twilio_rest, twilio_secrets
):
    receiver = Receiver(SECRET, down=True)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_asgi, receiver.app(), "127.0.0.1", 0)
        runtime = shop_runtime(
            tmp_path,
            twilio_rest,
            {**twilio_secrets, "HOOKLINE_WEBHOOK_SECRET": SECRET},
            notifications={"webhook": {"url": f"http://127.0.0.1:{port}{PATH}"}},
            outbox={"max_attempts": 3},
        )
        nursery.start_soon(runtime.outbox.run)
        await call_tool(runtime, "take_message", name="Dana Lee", reason="brakes")
        rows = {r.channel: r for r in await wait_settled(runtime)}
        nursery.cancel_scope.cancel()
    assert (rows["webhook"].status, rows["webhook"].attempts) == ("failed", 3)
    assert "503" in rows["webhook"].last_error
    assert rows["sms"].status == "sent"
    assert len(receiver.received) == 3

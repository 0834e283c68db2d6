"""The provider under the real Runtime and analytics: what refused requests leave behind."""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb
import httpx
import trio

import hookline_telephony_twilio
from hookline.analytics import plugin as analytics_plugin
from hookline.audio import tone_mulaw
from hookline.config import Secrets
from hookline.runtime import Runtime
from hookline.server import serve_app
from hookline.testing.harness import make_config, scripted_plugins
from hookline.testing.scripted import Reply, ScriptedLLM, ScriptedSTT, ScriptedTTS
from hookline_testkit.twilio_sim import SIGNATURE_HEADER


async def _runtime(
    db: Path, rest_url: str, secrets: dict[str, str], *, llm: ScriptedLLM | None = None, **server
) -> Runtime:
    config = make_config(
        providers={"telephony": "twilio"},
        telephony={"twilio": {"api_base_url": rest_url, "token_ttl_s": 5.0}},
        analytics={"enabled": True, "database": str(db)},
        **({"server": server} if server else {}),
    )
    runtime = Runtime(
        config,
        scripted_plugins([hookline_telephony_twilio, analytics_plugin]),
        secrets=Secrets(secrets),
        providers={"stt": ScriptedSTT(), "llm": llm or ScriptedLLM(), "tts": ScriptedTTS()},
    )
    await runtime.start()
    return runtime


def _rows(db: Path) -> list[tuple]:
    con = duckdb.connect(str(db))
    try:
        return con.execute("SELECT end_reason, from_number FROM calls").fetchall()
    finally:
        con.close()


async def test_unsigned_and_replayed_webhooks_write_no_rows(
    nursery, tmp_path, twilio_rest, twilio_secrets, twilio_sim
):
    db = tmp_path / "calls.duckdb"
    runtime = await _runtime(db, twilio_rest.url, twilio_secrets, max_concurrent_calls=2)
    port = await nursery.start(serve_app, runtime, "127.0.0.1", 0)
    voice = f"http://127.0.0.1:{port}/twilio/voice"
    n = 25
    for i in range(n):
        hook = await twilio_sim.post_webhook(voice, sign=False, from_number=f"+1666{i:07d}")
        assert hook.status_code == 403
    real = await twilio_sim.post_webhook(voice)
    assert real.stream is not None
    async with httpx.AsyncClient() as client:
        for _ in range(5):
            replay = await client.post(
                voice,
                data=real.params,
                headers={SIGNATURE_HEADER: twilio_sim.sign(voice, real.params)},
            )
            assert replay.status_code == 403
    assert runtime.active_calls == 1  # the real call's reservation only
    assert runtime.refused == {"bad_signature": n, "replay": 5}
    with trio.fail_after(30):  # no stream comes: the reservation ends with its token
        await runtime.drain(grace_s=20)
    assert runtime.active_calls == 0
    runtime.stop()
    assert _rows(db) == []  # nothing an unauthenticated or replayed request claimed


async def test_agent_hangup_with_twilio_rest_down_ends_cleanly(
    nursery, tmp_path, twilio_rest, twilio_secrets, twilio_sim, caplog
):
    caplog.set_level(logging.INFO)
    db = tmp_path / "calls.duckdb"
    llm = ScriptedLLM([Reply(tool_calls=[("end_call", '{"goodbye": "Bye now."}')])])
    runtime = await _runtime(db, twilio_rest.url, twilio_secrets, llm=llm)
    stt: ScriptedSTT = runtime.stt  # type: ignore[assignment]
    port = await nursery.start(serve_app, runtime, "127.0.0.1", 0)
    with trio.fail_after(60):
        async with twilio_sim.call(f"http://127.0.0.1:{port}/twilio/voice") as call:
            await call.wait_for_audio()
            await call.wait_until_quiet()
            [session] = list(runtime.sessions)
            stt.expect(session.info.call_id, "That's all, thanks")
            twilio_rest.fail_next.extend([503] * 10)  # Twilio's API is down for the hang-up
            await call.say(tone_mulaw(0.6))
            await call.closed.wait()  # the stream was closed instead: Twilio ends the call
        await runtime.drain(grace_s=20)
    twilio_rest.fail_next.clear()
    runtime.stop()
    assert _rows(db) == [("agent_hangup", "+15550100")]
    assert [r.status_code for r in twilio_rest.updates(call.call_sid)] == [503] * 4
    assert not [r.getMessage() for r in caplog.records if r.exc_info]  # no traceback
    assert not any("crashed" in r.getMessage() for r in caplog.records)

"""Call recording (issue 13 #4) under the real Runtime and analytics: the recording is
started through the REST API when the stream starts, the caller hears the disclosure in
the greeting, the signed recording callback is stored against the call, a mis-signed one
is refused (403, counted, no row), and `hookline analytics prune` removes the rows."""

from __future__ import annotations

from pathlib import Path

import duckdb
import trio

import hookline_telephony_twilio
from hookline.analytics import plugin as analytics_plugin
from hookline.analytics.cli import prune
from hookline.config import Secrets
from hookline.runtime import Runtime
from hookline.server import serve_app
from hookline.testing.harness import make_config, scripted_plugins
from hookline.testing.scripted import ScriptedLLM, ScriptedSTT, ScriptedTTS
from hookline_testkit.twilio_sim import TwilioRestFake, TwilioSimulator

DISCLOSURE = "This call is recorded."


async def _runtime(db: Path, rest_url: str, secrets: dict[str, str], *, record: bool) -> Runtime:
    config = make_config(
        agent={"greeting": "Riverside Auto, hi."},
        providers={"telephony": "twilio"},
        telephony={"twilio": {"api_base_url": rest_url}},
        analytics={"enabled": True, "database": str(db)},
        recording={"enabled": record, "disclosure": DISCLOSURE},
        summary={"enabled": False},
    )
    runtime = Runtime(
        config,
        scripted_plugins([hookline_telephony_twilio, analytics_plugin]),
        secrets=Secrets(secrets),
        providers={"stt": ScriptedSTT(), "llm": ScriptedLLM(), "tts": ScriptedTTS()},
    )
    await runtime.start()
    return runtime


def _query(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db))
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


async def _recorded_call(
    runtime: Runtime, port: int, sim: TwilioSimulator, rest: TwilioRestFake
) -> tuple[str, str]:
    """One call that waits for its recording to start; (call sid, recording sid)."""
    with trio.fail_after(60):
        async with sim.call(f"http://127.0.0.1:{port}/twilio/voice") as call:
            await call.wait_for_audio()
            while not rest.recordings_of(call.call_sid):
                await rest.changed.wait()
            await call.wait_until_quiet()
            await call.hangup()
            await call.closed.wait()
    (recording,) = rest.recordings_of(call.call_sid)
    return call.call_sid, recording.sid


async def test_a_recorded_call_is_disclosed_and_its_callback_stored(
    nursery, tmp_path, twilio_rest, twilio_secrets, twilio_sim
):
    db = tmp_path / "calls.duckdb"
    runtime = await _runtime(db, twilio_rest.url, twilio_secrets, record=True)
    # The caller is told, in the greeting itself (one cached phrase).
    assert runtime.config.agent.greeting == f"Riverside Auto, hi. {DISCLOSURE}"
    assert runtime.config.agent.greeting in runtime.phrases
    port = await nursery.start(serve_app, runtime, "127.0.0.1", 0)
    call_sid, recording_sid = await _recorded_call(runtime, port, twilio_sim, twilio_rest)

    (started,) = [r for r in twilio_rest.requests if r.fields.get("RecordingStatusCallback")]
    assert started.status_code == 201
    callback = f"http://127.0.0.1:{port}/twilio/recording"
    assert started.fields["RecordingStatusCallback"] == callback
    assert started.fields["RecordingStatusCallbackEvent"] == "completed"

    # A forged callback (wrong signature): refused, counted, nothing stored.
    assert await twilio_rest.finish_recording(recording_sid, sign="Zm9yZ2Vk") == 403
    assert await twilio_rest.finish_recording(recording_sid, sign=False) == 403
    assert runtime.refused["bad_signature"] == 2
    # Twilio's own, after the call ended: stored against the call.
    assert await twilio_rest.finish_recording(recording_sid, duration_s=37) == 204
    runtime.stop()

    ((call_id,),) = _query(db, "SELECT id FROM calls")
    assert _query(
        db, "SELECT recording_sid, call_id, provider_call_id, status, duration_s FROM recordings"
    ) == [(recording_sid, call_id, call_sid, "completed", 37.0)]
    ((url,),) = _query(db, "SELECT url FROM recordings")
    assert url.endswith(f"/Recordings/{recording_sid}")


async def test_a_forged_callback_alone_leaves_no_row(
    nursery, tmp_path, twilio_rest, twilio_secrets, twilio_sim
):
    db = tmp_path / "calls.duckdb"
    runtime = await _runtime(db, twilio_rest.url, twilio_secrets, record=True)
    port = await nursery.start(serve_app, runtime, "127.0.0.1", 0)
    _, recording_sid = await _recorded_call(runtime, port, twilio_sim, twilio_rest)
    wrong = TwilioSimulator(auth_token="not-the-token").sign(
        twilio_rest.recordings[recording_sid].callback_url, {"RecordingSid": recording_sid}
    )
    assert await twilio_rest.finish_recording(recording_sid, sign=wrong) == 403
    runtime.stop()
    assert runtime.refused == {"bad_signature": 1}
    assert _query(db, "SELECT count(*) FROM recordings") == [(0,)]
    assert _query(db, "SELECT count(*) FROM events WHERE type = 'RecordingCompleted'") == [(0,)]


async def test_recording_is_off_by_default(
    nursery, tmp_path, twilio_rest, twilio_secrets, twilio_sim
):
    db = tmp_path / "calls.duckdb"
    runtime = await _runtime(db, twilio_rest.url, twilio_secrets, record=False)
    assert runtime.config.agent.greeting == "Riverside Auto, hi."
    port = await nursery.start(serve_app, runtime, "127.0.0.1", 0)
    with trio.fail_after(60):
        async with twilio_sim.call(f"http://127.0.0.1:{port}/twilio/voice") as call:
            await call.wait_for_audio()
            await call.wait_until_quiet()
    runtime.stop()
    assert twilio_rest.recordings == {}
    assert not [r for r in twilio_rest.requests if r.call_sid == call.call_sid]


async def test_prune_removes_recordings_with_their_calls(
    nursery, tmp_path, twilio_rest, twilio_secrets, twilio_sim
):
    db = tmp_path / "calls.duckdb"
    runtime = await _runtime(db, twilio_rest.url, twilio_secrets, record=True)
    port = await nursery.start(serve_app, runtime, "127.0.0.1", 0)
    _, recording_sid = await _recorded_call(runtime, port, twilio_sim, twilio_rest)
    assert await twilio_rest.finish_recording(recording_sid) == 204
    runtime.stop()
    assert _query(db, "SELECT count(*) FROM recordings") == [(1,)]

    con = duckdb.connect(str(db))
    try:
        kept = prune(con, older_than_days=1)  # the call is minutes old: kept
        assert kept["recordings"] == 0 and kept["calls"] == 0
        counts = prune(con, older_than_days=0)
    finally:
        con.close()
    assert (counts["calls"], counts["recordings"]) == (1, 1)
    assert _query(db, "SELECT count(*) FROM recordings") == [(0,)]

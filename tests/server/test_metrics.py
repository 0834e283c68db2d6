"""`/metrics` on its own port: scraped and parsed with prometheus-client's own parser
after calls placed through the real Twilio plugin; the counts are the calls placed."""

from __future__ import annotations

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

import hookline.metrics
import hookline_telephony_twilio
from hookline.config import Secrets
from hookline.events import ProviderFailed, TurnMetrics
from hookline.metrics import metrics_for, probe_loop_lag, serve_metrics, watch_notifications
from hookline.providers import CallInfo
from hookline.runtime import Runtime
from hookline.server import serve_app
from hookline.testing.harness import make_config, scripted_plugins
from hookline.testing.scripted import ScriptedLLM, ScriptedSTT, ScriptedTTS
from hookline_testkit.dial import dial, summarize
from hookline_testkit.twilio_sim import DEFAULT_ACCOUNT_SID

from .conftest import Recorder


async def _runtime(
    twilio_rest, twilio_secrets, **sections
) -> tuple[Runtime, Recorder, ScriptedSTT]:
    config = make_config(
        providers={"telephony": "twilio"},
        telephony={"twilio": {"api_base_url": twilio_rest.url}},
        **sections,
    )
    recorder = Recorder()
    stt = ScriptedSTT()
    runtime = Runtime(
        config,
        scripted_plugins([hookline_telephony_twilio, hookline.metrics, recorder]),
        secrets=Secrets(twilio_secrets),
        providers={
            "stt": stt,
            "llm": ScriptedLLM(["Sure."] * 3),
            "tts": ScriptedTTS(ttfb_s=0.01, chars_per_s=40.0),
        },
    )
    await runtime.start()
    return runtime, recorder, stt


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_count_the_calls_placed(
    nursery, twilio_rest, twilio_secrets, twilio_auth_token
):
    runtime, recorder, stt = await _runtime(
        twilio_rest, twilio_secrets, server={"max_concurrent_calls": 3}
    )
    recorder.on_start = lambda call_id: stt.expect(call_id, "I need an oil change")
    port = await nursery.start(serve_app, runtime, "127.0.0.1", 0)
    shutdown = trio.Event()
    metrics_port = await nursery.start(
        lambda task_status: serve_metrics(
            runtime, shutdown=shutdown, host="127.0.0.1", port=0, task_status=task_status
        )
    )
    url = f"http://127.0.0.1:{port}/twilio/voice"
    with trio.fail_after(60):
        results = await dial(
            url,
            calls=4,
            auth_token=twilio_auth_token,
            account_sid=DEFAULT_ACCOUNT_SID,
            say_s=0.6,
            call_timeout_s=40,
        )
        # One more with a wrong token: refused before anything it claims is trusted.
        forged = await dial(url, calls=1, auth_token="not-the-token", call_timeout_s=10)
        await recorder.wait_for(lambda: len(recorder.ended) == 4)
    summary = summarize(results)
    assert summary["completed"] == 3 and summary["busy"] == 1, results
    assert summarize(forged)["completed"] == 0

    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{metrics_port}/metrics")
        public = await client.get(f"http://127.0.0.1:{port}/metrics")
    shutdown.set()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert public.status_code == 404  # never on the public port
    samples = _samples(response.text)
    assert samples[("hookline_calls_total", (("reason", "caller_hangup"),))] == 3
    assert samples[("hookline_calls_total", (("reason", "rejected:busy"),))] == 1
    assert samples[("hookline_admissions_refused_total", (("reason", "busy"),))] == 1
    assert samples[("hookline_requests_refused_total", (("reason", "bad_signature"),))] == 1
    assert samples[("hookline_active_calls", ())] == 0
    # One voice-to-voice observation per agent turn that answered the caller.
    turns = [e for _, e in recorder.events if isinstance(e, TurnMetrics)]
    answered = sum("voice_to_voice" in e.metrics for e in turns)
    assert answered >= 3
    assert samples[("hookline_voice_to_voice_seconds_count", ())] == answered
    stages = {
        dict(labels)["stage"]
        for (name, labels) in samples
        if name == "hookline_stage_latency_seconds_count"
    }
    assert "llm_first_token" in stages and "tts_first_byte" in stages


async def test_provider_errors_lag_and_notifications(twilio_rest, twilio_secrets, autojump_clock):
    runtime, _, _ = await _runtime(twilio_rest, twilio_secrets)
    info = CallInfo(call_id="c1")
    for fatal in (False, False, True):
        runtime.notify(info, ProviderFailed(t=0.0, provider="tts/scripted", error="x", fatal=fatal))
    pending = [2]
    watch_notifications(runtime, pending=lambda: pending[0], failed=lambda: 1)
    metrics = metrics_for(runtime)
    with trio.move_on_after(2.1):
        await probe_loop_lag(metrics, 0.5)
    pending[0] = 5
    samples = _samples(metrics.exposition().decode())
    errors = "hookline_provider_errors_total"
    assert samples[(errors, (("kind", "recovered"), ("provider", "tts/scripted")))] == 2
    assert samples[(errors, (("kind", "fatal"), ("provider", "tts/scripted")))] == 1
    assert samples[("hookline_event_loop_lag_seconds_count", ())] == 4
    assert samples[("hookline_notifications_pending", ())] == 5  # read at scrape time
    assert samples[("hookline_notifications_failed", ())] == 1


async def test_each_runtime_has_its_own_registry(twilio_rest, twilio_secrets):
    one, _, _ = await _runtime(twilio_rest, twilio_secrets)
    two, _, _ = await _runtime(twilio_rest, twilio_secrets)
    one.record_rejected(CallInfo(call_id="c1"), "busy")
    first = _samples(metrics_for(one).exposition().decode())
    second = _samples(metrics_for(two).exposition().decode())
    assert first[("hookline_calls_total", (("reason", "rejected:busy"),))] == 1
    assert ("hookline_calls_total", (("reason", "rejected:busy"),)) not in second

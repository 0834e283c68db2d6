"""`hookline serve` and `hookline dial` from the command line's side."""

from __future__ import annotations

import json
import socket

import pytest
import trio

from hookline.cli import build_parser, main
from hookline.server import serve_app
from hookline_testkit.dial import dial, summarize
from hookline_testkit.twilio_sim import DEFAULT_ACCOUNT_SID


def test_serve_flags_parse():
    args = build_parser().parse_args(["serve", "agent.toml", "--host", "0.0.0.0", "--port", "9000"])
    assert (args.config, args.host, args.port) == ("agent.toml", "0.0.0.0", 9000)
    defaults = build_parser().parse_args(["serve", "agent.toml"])
    assert (defaults.host, defaults.port) == (None, None)  # [server] in the file decides
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "agent.toml", "--port", "http"])


def test_serve_reports_a_config_mistake_in_one_line(tmp_path, capsys):
    missing = tmp_path / "nope.toml"
    assert main(["serve", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hookline: ") and "nope.toml" in err and "Traceback" not in err
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[agent]\nname = "x"\n[providers]\ntelephony = "twilio"\nstt = "nobody"\n'
        'llm = "nobody"\ntts = "nobody"\n[server]\nprot = 1\n'
    )
    assert main(["serve", str(bad)]) == 1
    assert "server.prot" in capsys.readouterr().err


def test_serve_names_a_missing_secret(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TWILIO_AUTH_TOKEN", raising=False)
    config = tmp_path / "agent.toml"
    config.write_text(
        '[agent]\nname = "x"\n'
        '[providers]\ntelephony = "twilio"\nstt = "deepgram"\nllm = "openai"\ntts = "deepgram"\n'
        '[telephony.twilio]\npublic_url = "https://agent.example.com"\n'
    )
    assert main(["serve", str(config)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TWILIO_AUTH_TOKEN" in err[0] and "telephony.twilio" in err[0]


def test_serve_reports_a_taken_port(tmp_path, capsys):
    config = tmp_path / "agent.toml"
    config.write_text(
        '[agent]\nname = "x"\n'
        '[providers]\ntelephony = "twilio"\nstt = "deepgram"\nllm = "openai"\ntts = "deepgram"\n'
    )
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        # 5: the address (documented in hookline/cli.py), not a mistake in the file
        assert main(["serve", str(config), "--host", "127.0.0.1", "--port", str(port)]) == 5
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "Traceback" not in err


def test_dial_needs_a_token_or_unsigned(capsys, monkeypatch):
    monkeypatch.delenv("HOOKLINE_TEST_NO_TOKEN", raising=False)
    code = main(
        ["dial", "http://127.0.0.1:9/twilio/voice", "--auth-token-env", "HOOKLINE_TEST_NO_TOKEN"]
    )
    assert code == 1
    assert "HOOKLINE_TEST_NO_TOKEN" in capsys.readouterr().err


async def test_dial_places_concurrent_calls(nursery, stack, twilio_auth_token):
    s = await stack(["Sure."] * 3, server={"max_concurrent_calls": 3})
    s.recorder.on_start = lambda call_id: s.stt.expect(call_id, "I need an oil change")
    port = await nursery.start(serve_app, s.runtime, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}/twilio/voice"
    with trio.fail_after(40):
        results = await dial(
            url,
            calls=4,
            auth_token=twilio_auth_token,
            account_sid=DEFAULT_ACCOUNT_SID,
            say_s=0.6,
            call_timeout_s=30,
        )
    summary = summarize(results)
    assert summary["calls"] == 4, results
    assert summary["completed"] == 3, results
    assert summary["completed"] == 3 and summary["busy"] == 1  # one over the limit
    assert summary["greeting_ms"]["max"] > 0 and summary["answer_ms"]["p50"] > 0
    json.dumps(summary)  # what the command prints
    with trio.fail_after(10):
        await s.recorder.wait_for(lambda: len(s.recorder.ended) == 4)
    reasons = sorted(r.end_reason for r in s.recorder.ended)
    assert reasons == ["caller_hangup"] * 3 + ["rejected:busy"]


async def test_dial_against_a_closed_port_reports_failures():
    results = await dial(
        "http://127.0.0.1:9/twilio/voice", calls=2, auth_token="x", call_timeout_s=5
    )
    summary = summarize(results)
    assert summary["failed"] == 2 and summary["completed"] == 0
    assert sum(summary["errors"].values()) == 2


async def test_dial_behind_a_public_url(nursery, stack, twilio_auth_token):
    s = await stack(twilio={"public_url": "https://agent.example.com"})
    port = await nursery.start(serve_app, s.runtime, "127.0.0.1", 0)
    local = f"127.0.0.1:{port}"
    with trio.fail_after(20):
        results = await dial(
            f"http://{local}/twilio/voice",
            auth_token=twilio_auth_token,
            answer=False,
            sign_url="https://agent.example.com/twilio/voice",
            media_url=f"ws://{local}/twilio/media",
        )
    assert summarize(results)["completed"] == 1, results
    refused = await dial(f"http://{local}/twilio/voice", auth_token=twilio_auth_token, answer=False)
    assert refused[0].outcome == "refused" and refused[0].error == "HTTP 403"

"""The dashboard's pieces without a browser: waterfall arithmetic, passwords, sessions,
the sign-in limiter, the stored metrics, and the standalone app over an export."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hookline.dashboard.auth import (
    LoginLimiter,
    Session,
    SessionCodec,
    hash_password,
    verify_password,
)
from hookline.dashboard.data import WATERFALL, waterfall
from hookline.engine.metrics import TurnTiming

ms = st.floats(min_value=0, max_value=10_000, allow_nan=False)


@given(v2v=ms, stt=ms, eot=ms, llm=ms, first=ms, tool=ms, tts=ms, cached=st.booleans())
def test_waterfall_parts_always_add_up_to_voice_to_voice(
    v2v, stt, eot, llm, first, tool, tts, cached
):
    m = {
        "voice_to_voice": v2v, "stt_final": stt, "end_of_turn_delay": eot,
        "llm_first_sentence": llm, "llm_first_token": first, "tool": tool,
        "tts_first_byte": tts,
    }  # fmt: skip
    if cached:
        m["first_audio_cached"] = 1.0
    parts = waterfall(m)
    assert [p[0] for p in parts] == [k for k, _ in WATERFALL]
    assert all(p[2] >= 0 for p in parts)
    assert sum(p[2] for p in parts) == pytest.approx(v2v, abs=1e-6)


def test_the_stored_metrics_let_a_turn_add_up():
    """The issue's case: a turn whose parts did not add up (first sentence and tool
    rounds were not stored). Now llm_first_sentence holds the LLM's whole share."""
    t = TurnTiming(
        speech_end=0.0, last_final=0.281, turn_end=0.4, llm_start=0.4,
        llm_first_token=1.034, first_sentence=1.6, tts_request=1.6, tts_first_byte=1.751,
        first_audio=1.841, tool_ms=[3.0],
    )  # fmt: skip
    m = t.metrics()
    assert m["llm_first_sentence"] == pytest.approx(1200.0)
    assert m["tool_rounds"] == 1.0
    assert m["llm_first_token"] == pytest.approx(634.0)
    shares = m["end_of_turn_delay"] + m["llm_first_sentence"] + m["tts_first_byte"]
    assert shares + m["runtime_overhead"] == pytest.approx(m["voice_to_voice"])
    parts = waterfall(m)
    assert sum(p[2] for p in parts) == pytest.approx(1841.0)
    assert dict((k, v) for k, _, v in parts)["tool"] == pytest.approx(3.0)


def test_a_turn_from_before_the_new_metric_draws_no_bars():
    assert waterfall({"voice_to_voice": 900.0, "llm_first_token": 300.0}) is None


def test_password_hashes():
    encoded = hash_password("a long enough password")
    assert encoded.startswith("scrypt$")
    assert verify_password("a long enough password", encoded)
    assert not verify_password("a long enough passwore", encoded)
    assert not verify_password("x", "not a hash")
    assert hash_password("same") != hash_password("same")  # salted


def test_sessions_are_signed_and_expire():
    codec = SessionCodec(b"k" * 32, max_age_s=3600)
    value = codec.dumps(Session(user="admin", csrf="tok"))
    assert codec.loads(value) == Session(user="admin", csrf="tok")
    assert codec.loads(value[:-2] + "xx") is None
    assert SessionCodec(b"other" * 8, 3600).loads(value) is None
    assert SessionCodec(b"k" * 32, max_age_s=-1).loads(value) is None
    assert codec.loads("") is None


def test_the_limiter_counts_failures_per_client_in_a_window():
    lim = LoginLimiter(3, window_s=60)
    for t in (0, 1, 2):
        lim.failed("a", now=t)
    assert lim.blocked("a", now=3)
    assert not lim.blocked("b", now=3)
    assert not lim.blocked("a", now=61)  # the first failure left the window
    lim.succeeded("a")
    assert not lim.blocked("a", now=3)


async def test_the_standalone_dashboard_over_an_export(tmp_path: Path, monkeypatch):
    """`hookline dashboard CONFIG --data DIR`: the same pages over Parquet files."""
    import duckdb

    from hookline.analytics.cli import export
    from hookline.analytics.schema import open_database
    from hookline.dashboard import Analytics, build_dashboard, open_parquet
    from hookline.server import asgi_app
    from hookline.testing.harness import make_config

    con = open_database(tmp_path / "calls.duckdb")
    con.execute(
        "INSERT INTO calls (id, started, ended, duration_s, from_number, end_reason, turns) "
        "VALUES ('c1', now()::TIMESTAMP, now()::TIMESTAMP, 42, '+15550100', 'caller_hangup', 2)"
    )
    con.execute("INSERT INTO turns VALUES ('c1', 0, 'user', 'my car makes a noise', "
                "NULL, false, NULL, NULL, NULL)")  # fmt: skip
    con.execute("INSERT INTO turns VALUES ('c1', 1, 'agent', 'We open at eight and close at six.', "
                "'We open at eight', true, NULL, NULL, NULL)")  # fmt: skip
    con.execute("INSERT INTO latencies VALUES ('c1', 1, NULL, 'voice_to_voice', 800)")
    con.execute("INSERT INTO tool_calls VALUES ('c1', 1, NULL, 't1', 'x', '{}', true, NULL, "
                "'ok', 3)")  # fmt: skip
    export(con, tmp_path / "export", source="test")
    con.close()
    assert isinstance(con, duckdb.DuckDBPyConnection)

    monkeypatch.setenv("HOOKLINE_DASHBOARD_PASSWORD_HASH", hash_password("the password 123"))
    config = make_config()
    analytics = Analytics(open_parquet(tmp_path / "export"), "UTC")
    app = asgi_app([], mounts=[("/admin", build_dashboard(config, analytics, source="parquet"))])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/admin/calls")).status_code == 303
        login = await client.get("/admin/login")
        csrf = login.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        r = await client.post("/admin/login", data={"csrf": csrf, "password": "the password 123"})
        assert r.status_code == 303
        page = await client.get("/admin/calls")
        assert "+15550100" in page.text and "exported Parquet data" in page.text
        one = await client.get("/admin/calls/c1")
        assert "my car makes a noise" in one.text
        # The barge-in: what was heard, the mark, and the unheard rest.
        assert '<span class="heard">We open at eight</span>' in one.text
        assert "caller cut in" in one.text
        assert '<span class="unheard"> and close at six.</span>' in one.text
        today = (await client.get("/admin/api/today")).json()
        assert today["calls"] == 1 and today["live"] == []
    analytics.close()


async def test_the_file_of_a_stopped_server_is_not_held_between_queries(tmp_path: Path):
    """Held open, the dashboard's lock would keep `hookline serve` from starting."""
    import duckdb

    from hookline.analytics.schema import open_database
    from hookline.dashboard import Analytics, open_file

    open_database(tmp_path / "calls.duckdb").close()
    analytics = Analytics(open_file(tmp_path / "calls.duckdb"), "UTC", keep_open=False)
    assert (await analytics.today())["calls"] == 0
    # A read-write open (as the server's writer does) works: nothing holds the file.
    duckdb.connect(str(tmp_path / "calls.duckdb")).close()


async def test_the_call_page_shows_the_summary_and_the_recording(tmp_path: Path, monkeypatch):
    """Read from the tables the summarizer and the recording callback write (the page
    used to read keys of `calls.extra` that nothing writes)."""
    from hookline.analytics.schema import open_database
    from hookline.dashboard import Analytics, build_dashboard, open_file
    from hookline.server import asgi_app
    from hookline.testing.harness import make_config

    con = open_database(tmp_path / "calls.duckdb")
    con.execute(
        "INSERT INTO calls (id, started, ended, duration_s, from_number, end_reason, turns) "
        "VALUES ('c1', now()::TIMESTAMP, now()::TIMESTAMP, 42, '+15550100', 'caller_hangup', 2)"
    )
    con.execute(
        "INSERT INTO call_summaries (call_id, status, summary, reason_for_calling, outcome, "
        "follow_up_needed, follow_up, created) VALUES ('c1', 'done', 'Brake noise on a 2018 "
        "Civic; booked Tuesday.', 'brake noise', 'booked', true, 'Call back with a quote', "
        "now()::TIMESTAMP)"
    )
    con.execute(
        "INSERT INTO recordings VALUES ('RE0123', 'c1', 'CA1', 'completed', 151, "
        "'https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE0123', now()::TIMESTAMP)"
    )
    con.close()
    monkeypatch.setenv("HOOKLINE_DASHBOARD_PASSWORD_HASH", hash_password("the password 123"))
    analytics = Analytics(open_file(tmp_path / "calls.duckdb"), "UTC", keep_open=False)
    app = asgi_app([], mounts=[("/admin", build_dashboard(make_config(), analytics))])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        login = await client.get("/admin/login")
        csrf = login.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        await client.post("/admin/login", data={"csrf": csrf, "password": "the password 123"})
        one = (await client.get("/admin/calls/c1")).text
    assert "Brake noise on a 2018 Civic; booked Tuesday." in one
    assert "Call back with a quote" in one and "brake noise" in one
    assert "RE0123" in one and "2:31" in one
    assert 'href="https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE0123"' in one
    analytics.close()


async def test_a_held_connection_is_opened_again_when_its_source_changes() -> None:
    """The segments dataset is held open; a table's first segment needs a new view."""
    import duckdb

    from hookline.dashboard import Analytics

    opened: list[int] = []
    version = [1]

    def opener() -> duckdb.DuckDBPyConnection:
        opened.append(version[0])
        return duckdb.connect(":memory:")

    analytics = Analytics(opener, "UTC", reopen_on=lambda: version[0])
    for _ in range(3):
        assert await analytics.run(lambda con: con.execute("SELECT 1").fetchall()) == [(1,)]
    version[0] = 2
    await analytics.run(lambda con: con.execute("SELECT 1").fetchall())
    await analytics.run(lambda con: con.execute("SELECT 1").fetchall())
    analytics.close()
    assert opened == [1, 2]

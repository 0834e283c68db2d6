"""`hookline demo`: a whole call through the real server and plugins against the fakes."""

from __future__ import annotations

import io

import duckdb
import msgspec

from hookline_testkit.demo import run_demo


async def test_demo_books_an_appointment_end_to_end(tmp_path):
    out = io.StringIO()
    summary = await run_demo(out=out, workdir=tmp_path, speech_chars_per_s=80)
    text = out.getvalue()
    assert summary["end_reason"] == "agent_hangup"
    assert summary["agent_turns_measured"] == 3
    assert "tool check_availability: ok" in text
    assert "tool book_appointment: ok" in text
    assert "You're all set for" in text
    # The caller's phone got the confirmation text, once, through the Messages API fake.
    assert summary["texts_sent"] == 1
    assert "text to +15550100 from +13125550140:" in text
    assert "Riverside Auto Service (demo): your oil change is booked for " in text
    # Analytics recorded the call, its turns and tool calls.
    con = duckdb.connect(summary["analytics_database"], read_only=True)
    (reason,) = con.execute("select end_reason from calls").fetchone()
    assert reason == "agent_hangup"
    tools = dict(con.execute("select tool, ok from tool_calls").fetchall())
    assert tools == {"check_availability": True, "book_appointment": True, "end_call": True}
    con.close()


def test_the_demo_model_books_with_the_date_its_prompt_gives() -> None:
    from types import SimpleNamespace

    from hookline_testkit.demo import DemoBrain

    system = SimpleNamespace(role="system", content="Hi. Today's date is 2030-01-07.\nMore.")
    user = SimpleNamespace(role="user", content="I'd like an oil change tomorrow morning.")
    reply = DemoBrain()(SimpleNamespace(chat=SimpleNamespace(messages=[system, user])))
    assert '"earliest":"2030-01-08"' in msgspec.json.encode(reply).decode().replace('\\"', '"')
    undated = DemoBrain()(SimpleNamespace(chat=SimpleNamespace(messages=[user])))
    assert "don't know today's date" in msgspec.json.encode(undated).decode()

"""`caller_numbers = "hashed"` or `"drop"` keeps the caller's number out of everything
analytics stores (every table, the Parquet export) and out of the log, whatever the
spelling: E.164, digits only, national, formatted. Real calls through the call engine."""

from __future__ import annotations

import logging
import re

import duckdb
import msgspec
import pytest

from hookline import ToolContext, ToolSet, tool
from hookline.analytics import plugin as analytics_plugin
from hookline.analytics.cli import export
from hookline.analytics.rows import Privacy, hash_number
from hookline.analytics.schema import TABLES
from hookline.hookspecs import hookimpl
from hookline.testing.harness import make_config, run_call, scripted_runtime
from hookline.testing.scripted import (
    HangUpStep,
    Reply,
    Say,
    ScriptedLeg,
    ScriptedLLM,
    ScriptedSTT,
    WaitForAgent,
    call_info,
)

CALLER = "+15551230000"
SPELLINGS = ["+15551230000", "15551230000", "5551230000", "555-123-0000", "(555) 123-0000"]
SALT = "pepper"


class Lookup(msgspec.Struct):
    phone: str


@tool
async def find_customer(params: Lookup, ctx: ToolContext) -> dict:
    """The customer record for a phone number (echoes the number in several spellings)."""
    return {
        "name": "Ada Lovelace",
        "phone": "+1 (555) 123-0000",
        "e164": CALLER,
        "digits": 15551230000,
        "national": "555.123.0000",
    }


class CustomerTools:
    @hookimpl
    def hookline_toolsets(self):
        return [ToolSet(name="customers", create=lambda settings, rt: [find_customer])]


def leaks(text: str) -> list[str]:
    """Every spelling of the caller's number found in `text` (separators ignored too)."""
    found = [s for s in SPELLINGS if s in text]
    if "5551230000" in re.sub(r"[\s().+\-]", "", text):
        found.append("digits with separators")
    return found


async def call_and_collect(db, tmp_path, caplog, numbers: str) -> dict[str, str]:
    """One call whose transcript, tool arguments and tool result carry the caller's number;
    returns everything stored about it: each table, the Parquet export and the log."""
    stt = ScriptedSTT()
    llm = ScriptedLLM([
        Reply(tool_calls=[("find_customer", '{"phone": "555-123-0000"}')]),
        "I have you as Ada at (555) 123-0000, or +1 555 123 0000.",
    ])  # fmt: skip
    config = make_config(
        providers={"tools": ["builtin", "customers"]},
        analytics={"enabled": True, "database": str(db), "caller_numbers": numbers},
    )
    caplog.set_level(logging.DEBUG, logger="hookline")
    runtime = await scripted_runtime(
        config, stt=stt, llm=llm, plugins=[analytics_plugin, CustomerTools()]
    )
    runtime.record_rejected(call_info(call_id="busy1", from_number=CALLER), "busy")
    runtime.record_status("CA-status", {"From": CALLER, "CallStatus": "completed"})
    script = [WaitForAgent(), Say("my number is 555 123 0000"), WaitForAgent(timeout=60)]
    script += [HangUpStep()]
    await run_call(runtime, ScriptedLeg(call_info(from_number=CALLER), script, stt))
    runtime.stop()
    stored: dict[str, str] = {}
    con = duckdb.connect(str(db))
    try:
        for table in TABLES:
            stored[table] = repr(con.execute(f"SELECT * FROM {table}").fetchall())
        assert "find_customer" in stored["tool_calls"]
        out = tmp_path / f"export-{numbers}"
        exported = export(con, out, source="test")
    finally:
        con.close()
    parquet = duckdb.connect()
    for table in TABLES:
        if not exported[table]:  # a table this call left empty (summaries) has no files
            continue
        files = str(out / table / "**" / "*.parquet")
        stored[f"parquet {table}"] = repr(parquet.execute(f"SELECT * FROM '{files}'").fetchall())
    stored["log"] = "\n".join(r.getMessage() for r in caplog.records)
    return stored


async def test_plain_numbers_are_stored_everywhere(autojump_clock, db, tmp_path, caplog):
    # The check below can fail: with "plain" the number is in every place it is looked for.
    stored = await call_and_collect(db, tmp_path, caplog, "plain")
    for place in ("calls", "turns", "tool_calls", "events", "parquet tool_calls", "log"):
        assert leaks(stored[place]), place


@pytest.mark.parametrize("numbers", ["hashed", "drop"])
async def test_the_caller_number_is_nowhere(
    autojump_clock, db, tmp_path, caplog, monkeypatch, numbers
):
    monkeypatch.setenv("HOOKLINE_HASH_SALT", SALT)
    stored = await call_and_collect(db, tmp_path, caplog, numbers)
    found = {place: leaks(text) for place, text in stored.items()}
    assert not any(found.values()), {p: f for p, f in found.items() if f}
    digest = hash_number(CALLER, SALT.encode())
    if numbers == "hashed":  # the number's hash stands in for it, so calls can be joined
        assert digest in stored["calls"] and digest in stored["tool_calls"]
        assert f"call started from #{digest[:12]}" in stored["log"]  # finds the row
    else:
        assert digest not in stored["calls"] + stored["tool_calls"]
        assert "call started from (number withheld)" in stored["log"]
    # What was said around the number is kept: only the number goes.
    assert "my number is" in stored["turns"] and "Ada Lovelace" in stored["tool_calls"]


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        ("call +15551230000 now", "call [number] now"),
        ("call 1-555-123-0000.", "call [number]."),
        ("at 555 123 0000 10 times", "at [number] 10 times"),
        ("local 123-0000 ok", "local [number] ok"),
        ("{'digits': 15551230000}", "{'digits': [number]}"),
        ("not 15551230001 or 55512300000", "not 15551230001 or 55512300000"),
        ("order 4421 at 10:30, $55.12", "order 4421 at 10:30, $55.12"),
    ],
)
def test_the_number_in_its_usual_spellings(text, scrubbed):
    redact = Privacy(numbers="drop").redactor([CALLER])
    assert redact is not None and redact(text) == scrubbed

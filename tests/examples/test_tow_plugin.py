"""The example third-party plugin, found through its entry point and used in a call."""

from __future__ import annotations

import msgspec
import pytest

from hookline import ConfigError, Storage, decode_section
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
from hookline_example_tow import TowSettings, TowStore
from hookline_example_tow.store import SCHEMA


async def test_tow_request_is_queued_once(tmp_path, autojump_clock):
    config = make_config(
        providers={"tools": ["builtin", "tow_requests"]},
        tools={"tow_requests": {"database": "tows.duckdb", "eta_minutes": 30}},
    )
    config = msgspec.structs.replace(config, path=str(tmp_path / "agent.toml"))
    args = '{"location": "I-90 exit 12", "vehicle": "blue 2015 Civic", "problem": "flat tire"}'
    llm = ScriptedLLM(
        [
            Reply(tool_calls=[("request_tow", args)]),
            "A truck is on its way, about thirty minutes.",
        ]
    )
    stt = ScriptedSTT()
    # installed=True: the example is found through its entry point, like a third party's.
    runtime = await scripted_runtime(config, stt=stt, llm=llm, installed=True)
    assert runtime.plugins.origin["tow_requests"] == "hookline-example-tow"
    script = [WaitForAgent(), Say("I need a tow"), WaitForAgent(), HangUpStep()]
    leg = ScriptedLeg(call_info(), script, stt)
    record = await run_call(runtime, leg)

    (call,) = record.turns[2].tool_calls
    assert call.ok
    result = msgspec.json.decode(call.result)
    assert result["eta_minutes"] == 30 and result["callback_number"] == leg.info.from_number
    rows = await _stored(tmp_path / "tows.duckdb")
    assert [(t.reference, t.eta_minutes, t.done) for t in rows] == [
        (result["reference"], 30, False)
    ]


async def _stored(path):
    db = Storage().database(file=path, schema=SCHEMA, provider="test")
    return await TowStore(db).recent()


def test_the_jsonl_queue_of_earlier_versions_is_refused_with_a_pointer():
    with pytest.raises(ConfigError, match=r"queue_file.*database"):
        decode_section(
            make_config(), "tools.tow_requests", {"queue_file": "tows.jsonl"}, TowSettings
        )

"""The plugin as hookline loads it: discovery, the tool schemas the LLM sees, and a whole
scripted call that books through the engine."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import msgspec
import pytest
from calendar_google_helpers import SHOP

import hookline_calendar_google
from hookline.errors import ConfigError
from hookline.plugins import discover
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
from hookline_calendar_google.local_store import LocalStore
from hookline_calendar_google.schedule import Booking


def test_discovered_through_its_entry_point() -> None:
    plugins = discover()
    toolset = plugins.toolsets["calendar_google"]
    assert toolset.settings is hookline_calendar_google.CalendarSettings
    (info,) = [p for p in plugins.loaded if p.name == "calendar_google"]
    assert info.distribution == "hookline-calendar-google"
    assert [t.name for t in info.toolsets] == ["calendar_google"]
    assert set(toolset.tool_names) == {
        "check_availability", "book_appointment", "find_appointments",
        "reschedule_appointment", "cancel_appointment",
    }  # fmt: skip


def _config(tmp_path: Path, **overrides: object) -> object:
    tools = {**SHOP, "backend": "local", "database": str(tmp_path / "shop.duckdb"), **overrides}
    return make_config(
        agent={"timezone": "America/Chicago", "greeting": "Hi.", "fillers": ["One moment."]},
        providers={"tools": ["builtin", "calendar_google"]},
        tools={"calendar_google": tools},
    )


async def test_tool_schemas_describe_every_parameter(tmp_path: Path) -> None:
    runtime = await scripted_runtime(_config(tmp_path), plugins=[hookline_calendar_google],
                                     start=False)  # fmt: skip
    book = runtime.tools["book_appointment"]
    assert book.side_effect
    assert runtime.tools["cancel_appointment"].side_effect
    assert runtime.tools["reschedule_appointment"].side_effect
    assert not runtime.tools["check_availability"].side_effect
    schema = book.schema().parameters
    assert schema["properties"]["service"]["enum"] == sorted(SHOP["services"])
    assert set(schema["required"]) == {"service", "start", "customer_name", "vehicle"}
    for tool in runtime.tools.values():
        for name, prop in tool.schema().parameters["properties"].items():
            assert prop.get("description"), (tool.name, name)


async def test_a_bad_database_path_stops_start_up(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("not a directory")
    config = _config(tmp_path, database=str(tmp_path / "taken" / "shop.duckdb"))
    with pytest.raises(ConfigError, match=r"tools\.calendar_google\.database: cannot open"):
        await scripted_runtime(config, plugins=[hookline_calendar_google])


async def test_a_call_books_through_the_engine(tmp_path: Path) -> None:
    # Real time (the tools run in threads), so keep the call short.
    tz = ZoneInfo("America/Chicago")
    today = dt.datetime.now(tz).date()
    monday = today + dt.timedelta(days=7 - today.weekday())  # next week's Monday
    start = f"{monday.isoformat()}T09:00"
    arguments = msgspec.json.encode({
        "service": "oil change", "start": start, "customer_name": "Pat Doe",
        "vehicle": "2018 Honda Civic",
    }).decode()  # fmt: skip
    stt = ScriptedSTT()
    llm = ScriptedLLM(
        [
            Reply(tool_calls=[("book_appointment", arguments)], first_token_s=0.01),
            Reply("You're booked.", first_token_s=0.01, tokens_per_s=1000),
        ]
    )
    runtime = await scripted_runtime(
        _config(tmp_path), stt=stt, llm=llm, plugins=[hookline_calendar_google]
    )
    script = [
        WaitForAgent(),
        Say("Oil change Monday at nine"),
        WaitForAgent(timeout=10),
        HangUpStep(),
    ]
    info = call_info(from_number="(312) 555-0101")
    record = await run_call(runtime, ScriptedLeg(info, script, stt))

    (call,) = [c for t in record.turns for c in t.tool_calls]
    assert call.tool == "book_appointment" and call.ok, call
    result = msgspec.json.decode(call.result)
    assert result["booked"] and result["appointment"]["start"].startswith(start)
    assert result["appointment"]["phone"] == "+13125550101"
    # The booking is in the shop's file, made by this call.
    store = LocalStore(tmp_path / "shop.duckdb", runtime.thread_limiter, bays=1)
    begin = dt.datetime.fromisoformat(start).replace(tzinfo=tz)
    (stored,) = await store.bookings(begin, begin + dt.timedelta(minutes=30))
    await store.aclose()
    assert isinstance(stored, Booking)
    assert stored.call_id == info.call_id and stored.phone == "+13125550101"
    assert record.end_reason == "caller_hangup"
    # The file is held open by the serving process (one process: the local calendar's
    # reads are on every booking turn). While it is open, DuckDB refuses this process a
    # connection with another configuration (read-only); shutting down lets go of it.
    with pytest.raises(duckdb.ConnectionException, match="different configuration"):
        duckdb.connect(str(tmp_path / "shop.duckdb"), read_only=True)
    await runtime.aclose()
    with duckdb.connect(str(tmp_path / "shop.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM appointments").fetchall() == [(1,)]


async def test_a_database_from_before_confirmation_codes_opens(tmp_path: Path) -> None:
    import duckdb
    import trio

    path = tmp_path / "old.duckdb"
    old = duckdb.connect(str(path))
    old.execute(
        "CREATE TABLE appointments (id VARCHAR PRIMARY KEY, start_at TIMESTAMPTZ NOT NULL, "
        "end_at TIMESTAMPTZ NOT NULL, bay INTEGER, service VARCHAR NOT NULL DEFAULT '', "
        "phone VARCHAR NOT NULL DEFAULT '', customer_name VARCHAR NOT NULL DEFAULT '', "
        "vehicle VARCHAR NOT NULL DEFAULT '', notes VARCHAR NOT NULL DEFAULT '', "
        "call_id VARCHAR NOT NULL DEFAULT '', request_id VARCHAR NOT NULL DEFAULT '', "
        "replaces VARCHAR NOT NULL DEFAULT '', status VARCHAR NOT NULL DEFAULT 'confirmed', "
        "created_at TIMESTAMPTZ NOT NULL)"
    )
    old.execute(
        "INSERT INTO appointments (id, start_at, end_at, bay, service, phone, created_at) "
        "VALUES ('oldbooking', TIMESTAMPTZ '2026-03-09 15:00:00+00', "
        "TIMESTAMPTZ '2026-03-09 15:30:00+00', 1, 'oil change', '+13125550101', now())"
    )
    old.close()
    store = LocalStore(path, trio.CapacityLimiter(2), bays=1)
    kept = await store.get("oldbooking")
    assert kept is not None and kept.phone == "+13125550101" and kept.confirmation_code == ""
    start = dt.datetime(2026, 3, 9, 16, tzinfo=dt.UTC)
    new = Booking(id="newbooking", start=start, end=start + dt.timedelta(minutes=30), bay=1,
                  service="oil change", confirmation_code="123456")  # fmt: skip
    assert await store.insert(new) is not None
    assert (await store.get("newbooking")).confirmation_code == "123456"  # type: ignore[union-attr]
    await store.aclose()


async def test_the_local_store_refuses_a_taken_bay_itself(tmp_path: Path) -> None:
    import trio

    from hookline_calendar_google.store import SlotTaken

    store = LocalStore(tmp_path / "shop.duckdb", trio.CapacityLimiter(2), bays=1)
    nine = dt.datetime(2026, 3, 9, 15, tzinfo=dt.UTC)

    def job(id: str, start: dt.datetime, bay: int | None = 1, replaces: str = "") -> Booking:
        return Booking(id=id, start=start, end=start + dt.timedelta(hours=1), bay=bay,
                       service="diagnostics", replaces=replaces)  # fmt: skip

    assert await store.insert(job("first", nine)) is not None
    with pytest.raises(SlotTaken):  # overlaps on the same bay: not written
        await store.insert(job("second", nine + dt.timedelta(minutes=30)))
    assert await store.get("second") is None
    assert await store.insert(job("first", nine)) is None  # the same id: as Google's 409
    # A reschedule's replacement does not collide with the booking it replaces.
    assert await store.insert(job("moved", nine + dt.timedelta(minutes=15), replaces="first"))
    await store.aclose()

"""The prompt as a per-call template: rendered on a fixed clock, checked at start-up and by
`hookline check`, printed by `hookline prompt`, and what the engine hands the model."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from hookline.cli import main
from hookline.config import load_config
from hookline.errors import ConfigError
from hookline.plugins import discover
from hookline.prompt import check_prompt, render_prompt, system_messages
from hookline.prompt_cli import parse_at, preview_runtime
from hookline.providers import CallInfo
from hookline.testing.harness import make_config, run_call, scripted_runtime
from hookline.testing.scripted import (
    HangUpStep,
    Say,
    ScriptedLeg,
    ScriptedLLM,
    ScriptedSTT,
    WaitForAgent,
    call_info,
)

ROOT = Path(__file__).resolve().parents[2]
PROMPT = ROOT / "config" / "prompts" / "automotive.md"
CHICAGO = ZoneInfo("America/Chicago")
CALLER = "+13125550100"

SHOP_TOML = """
[agent]
name = "Riverside Auto Service"
instructions_file = "{prompt}"
address = "1420 Riverside Drive"
phone = "+13125550140"
timezone = "America/Chicago"

[providers]
telephony = "twilio"
stt = "deepgram"
llm = "openai"
tts = "deepgram"
tools = ["calendar_google", "builtin"]

[tools.calendar_google]
backend = "local"
database = "calendar.duckdb"
min_lead_minutes = 60
closures = [2026-12-24, 2026-12-25]
services = {{ "oil change" = 30, "brakes" = 120 }}

[tools.calendar_google.hours]
mon = "07:30-18:00"
tue = "07:30-18:00"
wed = "07:30-18:00"
thu = "07:30-18:00"
fri = "07:30-18:00"
sat = "08:00-13:00"

[analytics]
enabled = false
caller_numbers = "{numbers}"
"""


def write_config(tmp_path: Path, *, prompt: Path = PROMPT, numbers: str = "plain") -> Path:
    path = tmp_path / "shop.toml"
    path.write_text(SHOP_TOML.format(prompt=prompt, numbers=numbers))
    return path


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=CHICAGO).astimezone(dt.UTC)


def rendered(path: Path, when: str, caller: str = "") -> str:
    runtime = preview_runtime(load_config(path), discover())
    try:
        check_prompt(runtime, at(when))
        return render_prompt(runtime, CallInfo(call_id="t", from_number=caller), at(when))
    finally:
        runtime.stop()


async def test_open_shop_on_a_fixed_clock(tmp_path: Path) -> None:
    text = rendered(write_config(tmp_path), "2026-12-22T10:15", CALLER)
    assert "Right now it is Tuesday, December 22, 2026, 10:15 AM shop time" in text
    assert "Today's date is 2026-12-22." in text
    assert "The shop is open now, until today, Tuesday December 22, at 6 PM." in text
    # Facts from [tools.calendar_google], once: hours grouped, closures, services.
    assert "Opening hours: Monday to Friday 7:30 AM to 6 PM; Saturday 8 AM to 1 PM; " in text
    assert "Sunday closed." in text
    assert "Thursday, December 24, 2026; Friday, December 25, 2026." in text
    assert "oil change (30 minutes), brakes (2 hours)." in text
    assert "at 1420 Riverside Drive" in text
    assert f"calling from {CALLER}" in text
    assert "{{" not in text and "{%" not in text


async def test_next_opening_skips_the_closures(tmp_path: Path) -> None:
    # Wednesday evening before two holidays: Thursday and Friday are closed.
    text = rendered(write_config(tmp_path), "2026-12-23T18:30")
    assert "Right now it is Wednesday, December 23, 2026, 6:30 PM" in text
    assert "closed right now; it next opens Saturday, December 26 at 8 AM." in text
    assert "caller's number is withheld" in text


async def test_next_opening_across_the_dst_change(tmp_path: Path) -> None:
    # Saturday 2027-03-13 after closing; clocks spring forward on Sunday the 14th.
    text = rendered(write_config(tmp_path), "2027-03-13T15:00")
    assert "Right now it is Saturday, March 13, 2027, 3 PM" in text
    assert "it next opens Monday, March 15 at 7:30 AM." in text  # wall clock, not 6:30


async def test_the_caller_number_only_as_the_privacy_setting_allows(tmp_path: Path) -> None:
    text = rendered(write_config(tmp_path, numbers="drop"), "2026-12-22T10:15", CALLER)
    assert CALLER not in text and "3125550100" not in text
    assert "number is known to the tools" in text


async def test_a_returning_caller_is_known_by_their_own_number_only(tmp_path: Path) -> None:
    import logging

    import msgspec

    from hookline.tools import ToolContext

    config = load_config(write_config(tmp_path))
    runtime = preview_runtime(config, discover())
    book = runtime.tools["book_appointment"]
    ctx = ToolContext(
        call=CallInfo(call_id="c1", from_number=CALLER),
        control=None,  # type: ignore[arg-type]
        logger=logging.LoggerAdapter(logging.getLogger("test"), {"call_id": "c1"}),
        tool_call_id="tc-1",
    )
    start = (dt.datetime.now(CHICAGO) + dt.timedelta(days=7)).date()
    while start.weekday() > 4:
        start += dt.timedelta(days=1)
    args = {"service": "brakes", "start": f"{start}T09:00", "customer_name": "Sam Rivera",
            "vehicle": "2018 Honda Civic"}  # fmt: skip
    await book.handler(book.decode(msgspec.json.encode(args).decode()), ctx)
    now = dt.datetime.now(dt.UTC)
    mine = render_prompt(runtime, CallInfo(call_id="c2", from_number=CALLER), now)
    other = render_prompt(runtime, CallInfo(call_id="c3", from_number="+13125550199"), now)
    runtime.stop()
    assert "already has an upcoming appointment: brakes on" in mine
    assert "for the 2018 Honda Civic under Sam Rivera" in mine
    assert "Sam Rivera" not in other and "upcoming appointment" not in other


async def test_a_template_typo_is_a_one_line_config_error(tmp_path: Path) -> None:
    prompt = tmp_path / "typo.md"
    prompt.write_text(
        "Hello from {{ shop.name }}.\n{% if open_now %}Open.{% endif %}\n{{ wekday }}\n"
    )
    path = write_config(tmp_path, prompt=prompt)
    with pytest.raises(ConfigError) as err:
        rendered(path, "2026-12-22T10:15")
    message = str(err.value)
    assert "\n" not in message
    assert "agent.instructions_file" in message and "'wekday'" in message
    assert "nothing provides" in message and "weekday" in message  # lists what exists


def test_hookline_check_reports_a_template_typo(tmp_path: Path, capsys) -> None:
    prompt = tmp_path / "typo.md"
    prompt.write_text("Today is {{ wekday }}.\n")
    assert main(["check", str(write_config(tmp_path, prompt=prompt))]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "agent.instructions_file" in err and "'wekday'" in err


async def test_a_template_syntax_error_names_the_line(tmp_path: Path) -> None:
    prompt = tmp_path / "broken.md"
    prompt.write_text("Line one.\n{% if open_now %}\nOpen.\n")
    with pytest.raises(ConfigError, match=r"broken\.md: template error on line \d"):
        load_and_check(write_config(tmp_path, prompt=prompt))


async def test_an_attribute_typo_fails_the_start_up_check(tmp_path: Path) -> None:
    prompt = tmp_path / "attr.md"
    prompt.write_text("We are {{ shop.nmae }}.\n")
    with pytest.raises(ConfigError, match=r"template error on line 1: .*nmae"):
        load_and_check(write_config(tmp_path, prompt=prompt))


def load_and_check(path: Path) -> None:
    runtime = preview_runtime(load_config(path), discover())
    try:
        check_prompt(runtime)
    finally:
        runtime.stop()


def test_hookline_prompt_prints_the_rendered_prompt(tmp_path: Path, capsys) -> None:
    path = write_config(tmp_path)
    assert main(["prompt", str(path), "--from", CALLER, "--at", "2026-12-23T18:30"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("You are the receptionist of Riverside Auto Service, ")
    assert "Wednesday, December 23, 2026, 6:30 PM" in out
    assert "next opens Saturday, December 26 at 8 AM" in out
    assert f"calling from {CALLER}" in out
    assert main(["prompt", str(path), "--at", "yesterday"]) == 1
    assert "--at 'yesterday': not an ISO date or time" in capsys.readouterr().err


def test_at_is_shop_time_unless_it_has_an_offset() -> None:
    assert parse_at("2026-12-23T18:30", "America/Chicago") == at("2026-12-23T18:30")
    assert parse_at("2026-12-24T00:30+00:00", "America/Chicago") == at("2026-12-23T18:30")


async def test_the_engine_gives_the_model_the_rendered_prompt(autojump_clock) -> None:
    config = make_config(
        agent={"instructions": "Today's date is {{ today }} ({{ weekday }}); {{ tools|join(',') }}"}
    )
    stt, llm = ScriptedSTT(), ScriptedLLM(["Sure."])
    runtime = await scripted_runtime(config, stt=stt, llm=llm)
    script = [WaitForAgent(), Say("hello there"), WaitForAgent(), HangUpStep()]
    await run_call(runtime, ScriptedLeg(call_info(), script, stt))
    system = llm.requests[0][0]
    assert system.role == "system"
    assert system.content.startswith("Today's date is ")
    day = dt.date.fromisoformat(system.content[16:26])
    assert abs((day - dt.datetime.now(dt.UTC).date()).days) <= 1  # zone vs. UTC at midnight
    assert "end_call" in system.content and "{{" not in system.content


async def test_a_call_whose_prompt_fails_still_gets_a_dated_fallback() -> None:
    config = make_config(
        agent={"instructions": "{% if caller.known %}{{ caller.nope }}{% endif %}"}
    )
    runtime = await scripted_runtime(config)
    now = dt.datetime(2026, 12, 23, 12, 0, tzinfo=dt.UTC)
    (message,) = system_messages(runtime, CallInfo(call_id="x", from_number=CALLER), now)
    assert "Riverside Auto Service" in message.content
    assert "Wednesday, December 23, 2026 (2026-12-23)" in message.content


def test_the_test_kit_demo_renders_the_same_prompt_as_the_shop() -> None:
    kit = ROOT / "testkit" / "hookline_testkit" / "prompts" / "automotive.md"
    assert kit.read_bytes() == PROMPT.read_bytes(), "copy config/prompts/automotive.md to the kit"

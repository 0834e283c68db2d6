"""transfer_call refuses, with a sentence, outside `[tools.builtin] transfer_hours`."""

from __future__ import annotations

import datetime as dt
import logging

import msgspec
import pytest

from hookline.builtin_tools import BuiltinSettings, TransferHours, _transfer_tool
from hookline.providers import CallInfo
from hookline.tools import ToolContext

TZ = "America/Chicago"
SETTINGS = msgspec.convert(
    {"transfer_hours": {"mon": "08:00-17:00", "sat": ["09:00-12:00"]},
     "transfer_closed": ["2026-12-28"]},
    BuiltinSettings,
)  # fmt: skip


class _Control:
    def __init__(self) -> None:
        self.transferred: list[str] = []

    async def end_call(self, goodbye: str | None) -> None: ...

    async def transfer(self, number: str, announcement: str | None) -> None:
        self.transferred.append(number)


def _local(iso: str) -> dt.datetime:
    return dt.datetime.fromisoformat(iso).replace(tzinfo=dt.timezone(dt.timedelta(hours=-6)))


@pytest.mark.parametrize(
    ("when", "staffed"),
    [
        ("2026-11-30T08:00", True),  # Monday, opening minute
        ("2026-11-30T16:59", True),
        ("2026-11-30T17:00", False),  # closing is exclusive
        ("2026-12-01T10:00", False),  # Tuesday: not listed
        ("2026-12-05T11:00", True),  # Saturday
        ("2026-12-28T10:00", False),  # a Monday, but closed
    ],
)
def test_staffed_hours(when, staffed):
    assert TransferHours(SETTINGS, TZ).staffed(_local(when)) is staffed


async def test_transfer_tool_refuses_when_nobody_is_there():
    clock_at = [_local("2026-11-30T20:00")]
    t = _transfer_tool(
        "+15550001111", "One moment.", TransferHours(SETTINGS, TZ), lambda: clock_at[0]
    )
    control = _Control()
    ctx = ToolContext(
        call=CallInfo(call_id="c1"),
        control=control,  # type: ignore[arg-type]
        logger=logging.LoggerAdapter(logging.getLogger("t"), {}),
    )
    closed = await t.handler(t.params(reason="a person"), ctx)
    assert closed["transferred"] is False and "take a message" in closed["error"]
    assert control.transferred == []
    clock_at[0] = _local("2026-11-30T10:00")
    assert (await t.handler(t.params(reason="a person"), ctx))["transferred"] is True
    assert control.transferred == ["+15550001111"]


def test_bad_hours_are_a_clear_error():
    with pytest.raises(msgspec.ValidationError, match="should look like '08:00-17:00'"):
        msgspec.convert({"transfer_hours": {"mon": "8 to 5"}}, BuiltinSettings)
    with pytest.raises(msgspec.ValidationError, match="unknown weekday"):
        msgspec.convert({"transfer_hours": {"monday": "08:00-17:00"}}, BuiltinSettings)

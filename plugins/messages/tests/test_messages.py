"""take_message: durable (a kill -9 right after "message taken" keeps the row),
idempotent per tool-call id, calling back the caller's own number unless told otherwise."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import hookline_messages
from hookline import Storage
from hookline.logs import call_log
from hookline.testing.conformance import ToolSetConformance
from hookline.testing.harness import make_config, scripted_runtime
from hookline.testing.scripted import call_info
from hookline.tools import Tool, ToolContext, ToolError
from hookline_messages import MessageStore, hookline_toolsets
from hookline_messages.store import PROVIDER, SCHEMA
from hookline_messages.tools import build_tools, match_urgency


class _NoControl:
    async def end_call(self, goodbye: str | None) -> None: ...

    async def transfer(self, number: str, announcement: str | None) -> None: ...


def _ctx(tool_call_id: str = "call_abc", **call: Any) -> ToolContext:
    info = call_info(**call)
    return ToolContext(
        call=info,
        control=_NoControl(),
        logger=call_log("hookline.tools", info.call_id),
        tool_call_id=tool_call_id,
    )


async def _take(tool: Tool, ctx: ToolContext, **args: Any) -> dict[str, Any]:
    return await tool.handler(tool.decode(msgspec.json.encode(args).decode()), ctx)


@pytest.fixture(params=["duckdb", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MessageStore]:
    """The store on each `[storage]` engine: its DuckDB file, or a fresh PostgreSQL."""
    if request.param == "duckdb":
        storage = Storage("duckdb")
    else:
        storage = Storage("postgresql", url=request.getfixturevalue("postgres_url"))
    file = tmp_path / "data" / "messages.duckdb"
    yield MessageStore(storage.database(file=file, schema=SCHEMA, provider=PROVIDER))
    storage.close()


@pytest.fixture
def take_message(store: MessageStore) -> Tool:
    (tool,) = build_tools(store)
    return tool


class TestMessageTools(ToolSetConformance):
    @pytest.fixture
    def toolset(self) -> Any:
        (toolset,) = hookline_toolsets()
        return toolset

    @pytest.fixture
    def tools(self, store: MessageStore) -> list[Tool]:
        return build_tools(store)

    @pytest.fixture
    def tool_args(self) -> dict[str, str]:
        return {"take_message": '{"name": "Dana", "reason": "Question about her invoice"}'}

    @pytest.fixture
    def refused_tool_args(self) -> dict[str, list[str]]:
        return {
            "take_message": [
                '{"name": " ", "reason": "invoice"}',
                '{"name": "Dana", "reason": ""}',
                '{"name": "Dana", "reason": "invoice", "callback_number": "555-01"}',
                '{"name": "Dana", "reason": "invoice", "urgency": "purple"}',
            ]
        }

    @pytest.fixture
    def side_effect_tools(self) -> set[str]:
        return {"take_message"}


async def test_a_message_is_stored_new_with_the_callers_number(
    take_message: Tool, store: MessageStore
) -> None:
    result = await _take(
        take_message,
        _ctx(from_number="+13125550100"),
        name="Dana Ruiz",
        reason="Wants a quote for new tires",
        urgency="Urgent!",
    )
    assert result["taken"] and result["callback_number"] == "+13125550100"
    (stored,) = await store.pending()
    assert (stored.id, stored.name, stored.callback_number) == (
        result["message_id"],
        "Dana Ruiz",
        "+13125550100",
    )
    assert (stored.reason, stored.urgency, stored.status) == (
        "Wants a quote for new tires",
        "urgent",
        "new",
    )


async def test_a_given_number_wins_over_the_callers(
    take_message: Tool, store: MessageStore
) -> None:
    result = await _take(
        take_message,
        _ctx(from_number="+13125550100"),
        name="Dana",
        reason="invoice",
        callback_number="(773) 555-0199",
    )
    assert result["callback_number"] == "+17735550199"
    assert [m.callback_number for m in await store.pending()] == ["+17735550199"]


async def test_no_caller_id_and_no_number_asks_for_one(take_message: Tool) -> None:
    with pytest.raises(ToolError, match="best number to call them back"):
        await _take(take_message, _ctx(from_number="anonymous"), name="Dana", reason="invoice")


async def test_a_retried_tool_call_stores_once(take_message: Tool, store: MessageStore) -> None:
    ctx = _ctx("call_retry")
    first = await _take(take_message, ctx, name="Dana", reason="invoice")
    again = await _take(take_message, ctx, name="Dana", reason="invoice")
    assert first["message_id"] == again["message_id"]
    assert len(await store.recent()) == 1
    # Another tool call in the same call is another message.
    await _take(take_message, _ctx("call_other", call_id=ctx.call.call_id), name="D", reason="x")
    assert len(await store.recent()) == 2


async def test_pending_and_mark_for_the_sender(take_message: Tool, store: MessageStore) -> None:
    a = await _take(take_message, _ctx("t1"), name="A", reason="one")
    b = await _take(take_message, _ctx("t2"), name="B", reason="two")
    assert [m.id for m in await store.pending()] == [a["message_id"], b["message_id"]]
    assert await store.mark(a["message_id"], "sent")
    assert await store.mark(b["message_id"], "failed", "SMS 21211: invalid number")
    assert await store.pending() == []
    (failed,) = await store.recent(status="failed")
    assert failed.last_error == "SMS 21211: invalid number"
    assert not await store.mark("M-none", "sent")
    with pytest.raises(ValueError, match="use one of"):
        await store.mark(a["message_id"], "teleported")


@pytest.mark.parametrize(
    ("said", "level"),
    [
        ("urgent", "urgent"),
        ("URGENT", "urgent"),
        ("high priority", "urgent"),
        ("emergency", "urgent"),
        ("routine", "routine"),
        ("Normal", "routine"),
        ("not urgent", "routine"),
        ("", "routine"),
        ("purple", None),
    ],
)
def test_urgency_is_matched_loosely(said: str, level: str | None) -> None:
    assert match_urgency(said) == level


async def test_the_runtime_builds_it_from_config(tmp_path: Path) -> None:
    db = tmp_path / "m.duckdb"
    runtime = await scripted_runtime(
        make_config(providers={"tools": ["messages"]}, tools={"messages": {"database": str(db)}}),
        plugins=[hookline_messages],
    )
    result = await _take(runtime.tools["take_message"], _ctx(), name="Dana", reason="invoice")
    assert [m.id for m in MessageStore(db).recent_sync()] == [result["message_id"]]


async def test_hookline_messages_lists_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hookline.cli import main

    config = tmp_path / "shop.toml"
    config.write_text(
        '[agent]\nname = "Shop"\ninstructions = "x"\ngreeting = "hi"\n'
        '[providers]\ntelephony = "twilio"\nstt = "deepgram"\nllm = "openai"\n'
        'tts = "deepgram"\ntools = ["messages"]\n'
        '[tools.messages]\ndatabase = "data/msgs.duckdb"\n'
    )
    assert main(["messages", str(config)]) == 0
    assert capsys.readouterr().out == "no messages taken yet\n"
    (tool,) = build_tools(MessageStore(tmp_path / "data" / "msgs.duckdb"))
    taken = await _take(
        tool, _ctx(from_number="+13125550100"), name="Dana", reason="invoice", urgency="urgent"
    )
    assert main(["messages", str(config), "--status", "new"]) == 0
    header, _, row = capsys.readouterr().out.splitlines()
    assert header.split() == [
        "id", "time", "(UTC)", "name", "callback", "reason", "urgency", "status"
    ]  # fmt: skip
    assert row.split()[:1] + row.split()[3:] == [
        taken["message_id"], "Dana", "+13125550100", "invoice", "urgent", "new"
    ]  # fmt: skip
    assert main(["messages", str(config), "--status", "sent"]) == 0
    assert capsys.readouterr().out == "no messages taken yet\n"


_CHILD = textwrap.dedent(
    """
    import sys, trio, msgspec
    import hookline_messages
    from hookline.logs import call_log
    from hookline.testing.harness import make_config, scripted_runtime
    from hookline.testing.scripted import call_info
    from hookline.tools import ToolContext

    class NoControl:
        async def end_call(self, goodbye): ...
        async def transfer(self, number, announcement): ...

    async def main():
        config = make_config(
            providers={"tools": ["messages"]}, tools={"messages": {"database": sys.argv[1]}}
        )
        runtime = await scripted_runtime(config, plugins=[hookline_messages])
        tool = runtime.tools["take_message"]
        info = call_info(from_number="+13125550100")
        ctx = ToolContext(call=info, control=NoControl(),
                          logger=call_log("hookline.tools", info.call_id),
                          tool_call_id="call_kill9")
        args = '{"name": "Kim", "reason": "Brakes squeal after the repair", "urgency": "urgent"}'
        result = await tool.handler(tool.decode(args), ctx)
        sys.stdout.write(result["message"] + "\\n")
        sys.stdout.flush()
        await trio.sleep_forever()  # killed here

    trio.run(main)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs kill -9")
def test_a_taken_message_survives_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "data" / "messages.duckdb"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline() if child.stdout else ""
        assert line.startswith("Message taken for Kim"), child.stderr and child.stderr.read()
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    (message,) = MessageStore(db).recent_sync()
    assert (message.name, message.callback_number, message.urgency, message.status) == (
        "Kim",
        "+13125550100",
        "urgent",
        "new",
    )


async def test_postgresql_down_is_the_tools_sentence_and_nothing_half_written(tmp_path) -> None:
    """The database unreachable: the tool answers that it could not save (the model tells
    the caller), it does not claim "message taken"."""
    from hookline_messages.tools import UNREACHABLE

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    storage = Storage("postgresql", url=f"postgresql://u@127.0.0.1:{port}/d", connect_timeout_s=1)
    db = storage.database(file=tmp_path / "m.duckdb", schema=SCHEMA, provider=PROVIDER)
    (tool,) = build_tools(MessageStore(db))
    try:
        with pytest.raises(ToolError) as refused:
            await _take(tool, _ctx(), name="Dana", reason="invoice")
        assert str(refused.value) == UNREACHABLE
    finally:
        storage.close()

"""`hookline chat`: typed turns through the configured LLM (the OpenAI fake) and tools, by
the same response loop as a phone call."""

from __future__ import annotations

import os
import sys
import textwrap

import msgspec
import trio

from hookline import ToolContext, ToolSet, tool
from hookline.chat import chat
from hookline.hookspecs import hookimpl
from hookline.testing.harness import make_config, run_call, scripted_runtime
from hookline.testing.scripted import (
    HangUpStep,
    Pause,
    Reply,
    Say,
    ScriptedLeg,
    ScriptedLLM,
    ScriptedSTT,
    WaitForAgent,
    call_info,
)
from hookline_testkit.fake_openai import call, text, tool_calls


async def test_chat_runs_the_llm_and_tools(tmp_path, openai_fake):
    config = tmp_path / "agent.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [agent]
            name = "Shop"
            greeting = "Riverside Auto, how can I help?"
            [providers]
            telephony = "twilio"
            stt = "deepgram"
            llm = "openai"
            tts = "deepgram"
            tools = ["builtin"]
            [llm.openai]
            base_url = "{openai_fake.url}"
            [analytics]
            enabled = false
            """
        )
    )
    openai_fake.script(
        text("We open at half past seven."),
        tool_calls(call("end_call", '{"goodbye": "Bye now!"}')),
    )
    env = {**os.environ, "OPENAI_API_KEY": openai_fake.api_key}
    result = await trio.run_process(
        [sys.executable, "-m", "hookline.cli", "chat", str(config)],
        stdin=b"When do you open?\nthanks, bye\n",
        capture_stdout=True,
        capture_stderr=True,
        env=env,
        check=False,
    )
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert "agent> Riverside Auto, how can I help?" in out
    assert "agent> We open at half past seven." in out
    assert "[end_call(" in out and "agent> Bye now!" in out and "[call ended]" in out
    sent = openai_fake.chats[0].chat.messages
    assert sent[-1].content == "When do you open?"
    assert len(openai_fake.chats) == 2  # nothing asked of the LLM after the call ended
    assert [m.role for m in sent[:2]] == ["assistant", "user"]  # no empty system prompt


# ============================================ chat and calls run the same response loop


class _Plate(msgspec.Struct):
    plate: str


def _shop(log: list[str]):
    @tool
    async def lookup(params: _Plate, ctx: ToolContext) -> dict:
        """Look up a vehicle."""
        log.append(f"lookup:{params.plate}:turn{ctx.turn}")
        return {"plate": params.plate, "make": "Subaru"}

    class Plugin:
        @hookimpl
        def hookline_toolsets(self):
            return [ToolSet(name="shop", create=lambda settings, rt: [lookup])]

    return Plugin()


def _looping_llm() -> ScriptedLLM:
    # A model that never stops calling the tool: only the round limit ends the answer.
    loop = Reply("Let me check.", tool_calls=[("lookup", '{"plate": "ABC"}')])
    return ScriptedLLM(respond=lambda messages: loop)


def _config():
    return make_config(providers={"tools": ["builtin", "shop"]}, policy={"max_tool_rounds": 3})


def _conversation(llm: ScriptedLLM) -> list[list[tuple]]:
    return [
        [(m.role, m.content, [c.name for c in m.tool_calls], m.tool_call_id) for m in request]
        for request in llm.requests
    ]


async def test_chat_and_a_call_go_through_the_same_response_loop(autojump_clock):
    call_log, call_llm, stt = [], _looping_llm(), ScriptedSTT()
    runtime = await scripted_runtime(_config(), stt=stt, llm=call_llm, plugins=[_shop(call_log)])
    script = [WaitForAgent(), Say("Look up my car"), Pause(15), HangUpStep()]
    await run_call(runtime, ScriptedLeg(call_info(), script, stt))

    chat_log, chat_llm, out = [], _looping_llm(), []
    runtime = await scripted_runtime(_config(), llm=chat_llm, plugins=[_shop(chat_log)])
    lines = iter(["Look up my car"])

    async def read_line():
        return next(lines, None)

    history = await chat(runtime, read_line, out.append)

    # Three tool rounds, then a last round that offers no tools: in both.
    assert call_log == chat_log == ["lookup:ABC:turn2"] * 3
    assert call_llm.tools_seen == chat_llm.tools_seen
    assert chat_llm.tools_seen[-1] == [] and all(chat_llm.tools_seen[:-1])
    assert len(chat_llm.tools_seen) == 4
    # The model saw the very same conversation, request by request.
    assert _conversation(call_llm) == _conversation(chat_llm)
    printed = "".join(out)
    assert printed.count("agent> Let me check.") == 4
    assert printed.count("  [lookup(") == 3
    assert history[-1].role == "assistant" and history[-1].content == "Let me check."

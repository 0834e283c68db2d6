"""`hookline chat`: typed turns through the configured LLM (the OpenAI fake) and tools."""

from __future__ import annotations

import os
import sys
import textwrap

import trio

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

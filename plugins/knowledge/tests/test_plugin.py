"""The tool set as a deployer meets it: `hookline check` on the shop's config, hookline's
tool set conformance suite, and a whole call where the model asks the knowledge file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from hookline.cli import main
from hookline.testing.conformance import ToolSetConformance
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
from hookline_knowledge import KnowledgeSettings, hookline_toolsets
from hookline_knowledge.answers import file_tool
from hookline_knowledge.retrieval import KnowledgeIndex
from hookline_knowledge.sections import read_sections

CONFIG_DIR = Path(__file__).resolve().parents[3] / "config"
SECRETS = (
    "TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID", "DEEPGRAM_API_KEY", "OPENAI_API_KEY",
    "GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET", "GOOGLE_REFRESH_TOKEN", "HOOKLINE_HASH_SALT",
)  # fmt: skip


def shop_config(folder: Path, knowledge: bytes | None) -> Path:
    """config/automotive.toml in `folder`, with `knowledge` as its knowledge file (None:
    no file at all)."""
    text = (CONFIG_DIR / "automotive.toml").read_text()
    prompt = CONFIG_DIR / "prompts" / "automotive.md"
    text = text.replace('"prompts/automotive.md"', f'"{prompt}"')
    assert 'file = "knowledge/automotive.md"' in text
    if knowledge is not None:
        (folder / "knowledge").mkdir()
        (folder / "knowledge" / "automotive.md").write_bytes(knowledge)
    path = folder / "automotive.toml"
    path.write_text(text)
    return path


def test_the_shop_config_checks_with_its_knowledge_file(tmp_path, capsys, monkeypatch):
    for env in SECRETS:
        monkeypatch.setenv(env, "x")
    path = shop_config(tmp_path, (CONFIG_DIR / "knowledge" / "automotive.md").read_bytes())
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "knowledge" in out and out.rstrip().endswith("OK")


@pytest.mark.parametrize(
    ("label", "content", "words"),
    [
        ("missing", None, "no such file"),
        ("binary", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "binary file"),
        ("latin-1", "## Payment\nWe take Amex, se\xf1or.\n".encode("latin-1"), "not UTF-8"),
        ("no text", b"# Riverside\n\n## Payment\n\n<!-- to do -->\n", "no text to answer from"),
    ],
)
def test_a_bad_knowledge_file_is_one_line_at_check(
    tmp_path, capsys, monkeypatch, label, content, words
):
    for env in SECRETS:
        monkeypatch.setenv(env, "x")
    path = shop_config(tmp_path, content)
    assert main(["check", str(path)]) == 1, label
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "OK" not in out
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"hookline: {path}: tools.knowledge.file: "), lines[0]
    assert words in lines[0], lines[0]


class TestKnowledgeTools(ToolSetConformance):
    @pytest.fixture
    def toolset(self) -> Any:
        (toolset,) = hookline_toolsets()
        return toolset

    @pytest.fixture
    def tools(self) -> list[Any]:
        sections = read_sections(CONFIG_DIR / "knowledge" / "automotive.md")
        return [file_tool(KnowledgeIndex(sections), KnowledgeSettings(file="k.md"))]

    @pytest.fixture
    def tool_args(self) -> dict[str, str]:
        return {"answer_question": '{"question": "do you have loaner cars"}'}

    @pytest.fixture
    def refused_tool_args(self) -> dict[str, list[str]]:
        return {"answer_question": ['{"question": "   "}']}

    @pytest.fixture
    def side_effect_tools(self) -> set[str]:
        return set()


async def test_a_call_where_the_model_asks_the_knowledge_file(autojump_clock):
    config = make_config(
        providers={"tools": ["builtin", "knowledge"]},
        tools={"knowledge": {"file": "knowledge/automotive.md"}},
    )
    config = msgspec.structs.replace(config, path=str(CONFIG_DIR / "demo-knowledge.toml"))
    llm = ScriptedLLM(
        [
            Reply(tool_calls=[("answer_question", '{"question": "can I get a loaner car"}')]),
            "Yes, loaners are free for the first three days; you'd reserve one when you book.",
            Reply(tool_calls=[("answer_question", '{"question": "do you sell pizza"}')]),
            "I don't have that information. Can I take a message for you?",
        ]
    )
    stt = ScriptedSTT()
    # installed=True: the plugin is found through its entry point, as a deployment finds it.
    runtime = await scripted_runtime(config, stt=stt, llm=llm, installed=True)
    assert runtime.plugins.origin["knowledge"] == "hookline-knowledge"
    script = [
        WaitForAgent(),
        Say("will I get a loaner while my car is in"),
        WaitForAgent(),
        Say("do you sell pizza"),
        WaitForAgent(),
        HangUpStep(),
    ]
    leg = ScriptedLeg(call_info(), script, stt)
    record = await run_call(runtime, leg)

    calls = [c for turn in record.turns for c in turn.tool_calls]
    assert [c.tool for c in calls] == ["answer_question", "answer_question"]
    assert all(c.ok for c in calls)
    loaner, pizza = (msgspec.json.decode(c.result) for c in calls)
    assert loaner["found"] is True and loaner["topics"][0]["topic"] == "Loaner cars and shuttle"
    assert pizza["found"] is False
    # The model got the topic, not the whole file.
    tool_messages = [m.content for m in llm.requests[1] if m.role == "tool"]
    assert len(tool_messages) == 1 and "five loaner cars" in tool_messages[0]
    assert "Tire storage" not in tool_messages[0]
    assert "answer_question" in llm.tools_seen[0]

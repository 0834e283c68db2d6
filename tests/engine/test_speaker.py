"""The speaker is the only writer to the caller's leg (issue 11, item 3): by reading the
code, and by watching which task calls the leg's output methods during a busy call."""

from __future__ import annotations

import ast
from pathlib import Path

import trio
import trio.lowlevel

import hookline
from hookline import ProviderUnavailable
from hookline.testing.harness import make_config, run_call, scripted_runtime
from hookline.testing.scripted import (
    Pause,
    Reply,
    Say,
    ScriptedLeg,
    ScriptedLLM,
    ScriptedSTT,
    WaitForAgent,
    call_info,
)

OUTPUT_METHODS = {"play", "mark", "clear"}
CORE = Path(hookline.__file__).resolve().parent
SPEAKER = CORE / "engine" / "speaker.py"


def _leg_output_calls(path: Path) -> list[str]:
    """`<something leg-like>.play/mark/clear(...)` calls in one module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in OUTPUT_METHODS:
            continue
        receiver = ast.unparse(node.func.value)
        if "leg" in receiver.lower():
            found.append(f"{path.relative_to(CORE)}:{node.lineno}: {ast.unparse(node.func)}")
    return found


def test_only_the_speaker_module_writes_to_the_leg():
    # The scripted providers implement a leg; they do not drive one.
    modules = [p for p in CORE.rglob("*.py") if "testing" not in p.parts]
    assert SPEAKER in modules
    writers = [call for p in modules if p != SPEAKER for call in _leg_output_calls(p)]
    assert writers == []
    # The check sees the speaker's own writes (so it would see anyone else's).
    assert {c.rsplit(".", 1)[-1] for c in _leg_output_calls(SPEAKER)} == OUTPUT_METHODS


class WatchedLeg(ScriptedLeg):
    """Records which task calls each output method."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.writers: list[tuple[str, trio.lowlevel.Task]] = []

    async def play(self, audio: bytes) -> None:
        self.writers.append(("play", trio.lowlevel.current_task()))
        await super().play(audio)

    async def mark(self, name: str) -> None:
        self.writers.append(("mark", trio.lowlevel.current_task()))
        await super().mark(name)

    async def clear(self) -> None:
        self.writers.append(("clear", trio.lowlevel.current_task()))
        await super().clear()


async def test_one_task_writes_every_kind_of_speech_to_the_leg(autojump_clock):
    stt = ScriptedSTT()
    long_answer = (
        "We have openings on Monday. We also have Tuesday at nine. "
        "Wednesday is wide open. Thursday afternoon works too."
    )
    stalled = Reply(first_token_s=3.0, error=ProviderUnavailable("down", provider="llm/scripted"))
    goodbye = Reply(tool_calls=[("end_call", '{"goodbye": "Bye now!"}')])
    llm = ScriptedLLM([long_answer, stalled, goodbye])
    config = make_config(policy={"silence_reprompt_s": 4})
    runtime = await scripted_runtime(config, stt=stt, llm=llm)
    agent = runtime.config.agent
    script = [WaitForAgent(), Say("When can you fit me in"), Pause(4.5)]  # barge-in
    script += [Say("Tuesday at nine please"), WaitForAgent(timeout=20)]  # filler, fallback
    script += [Pause(6), Say("That's all thanks"), Pause(20)]  # reprompt, goodbye
    leg = WatchedLeg(call_info(), script, stt)
    record = await run_call(runtime, leg)

    texts = [t.text for t in record.turns if t.role == "agent"]
    assert texts[0] == agent.greeting
    assert f"{agent.fillers[0]} {agent.fallback_line}" in texts
    assert agent.reprompt in texts and texts[-1] == "Bye now!"
    assert record.end_reason == "agent_hangup"
    kinds = {kind for kind, _ in leg.writers}
    assert kinds == OUTPUT_METHODS
    tasks = {task for _, task in leg.writers}
    assert len(tasks) == 1, sorted(t.name for t in tasks)
    assert tasks.pop().name.endswith("_run_speaker")

"""CallSession.state: what the Today page shows for a live call."""

from __future__ import annotations

import msgspec
import trio

from hookline import ToolContext, ToolSet, hookimpl, tool
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


class Plate(msgspec.Struct):
    plate: str


async def test_state_follows_the_call(autojump_clock):
    in_tool, release = trio.Event(), trio.Event()

    @tool
    async def lookup(params: Plate, ctx: ToolContext) -> dict:
        """Look up a vehicle."""
        in_tool.set()
        await release.wait()
        return {"make": "Subaru"}

    class Tools:
        @hookimpl
        def hookline_toolsets(self):
            return [ToolSet(name="shop", create=lambda settings, ctx: [lookup])]

    stt = ScriptedSTT()
    llm = ScriptedLLM([Reply(tool_calls=[("lookup", '{"plate": "ABC"}')]), "Your Subaru."])
    runtime = await scripted_runtime(
        make_config(providers={"tools": ["builtin", "shop"]}, policy={"filler_after_s": 30}),
        stt=stt,
        llm=llm,
        plugins=[Tools()],
    )
    seen: list[str] = []

    async def watch() -> None:
        await in_tool.wait()
        [session] = runtime.sessions
        seen.append(session.state)
        assert session.started > 0
        release.set()

    script = [WaitForAgent(), Say("Look up my car"), WaitForAgent(timeout=60), HangUpStep()]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)

        async def greeting_state() -> None:
            while not runtime.sessions:  # noqa: ASYNC110 (polling a test's view)
                await trio.sleep(0.001)
            [session] = runtime.sessions
            while not session.playback.speaking:  # noqa: ASYNC110
                await trio.sleep(0.001)
            seen.append(session.state)

        nursery.start_soon(greeting_state)
        record = await run_call(runtime, ScriptedLeg(call_info(), script, stt))
    assert sorted(seen) == ["in a tool", "speaking"]
    assert not runtime.sessions
    assert record.turns[2].tool_calls[0].ok
    await runtime.aclose()

"""What every LLM provider must do (see `hookline.testing.conformance`)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import trio

from ...providers import LLM, Message, TextDelta, ToolCallRequest, ToolSchema, Usage

__all__ = ["LLMConformance"]

WEATHER = ToolSchema(
    name="check_availability",
    description="Find free appointment slots.",
    parameters={
        "type": "object",
        "properties": {"service": {"type": "string"}, "day": {"type": "string"}},
        "required": ["service", "day"],
    },
)
MESSAGES = [
    Message(role="system", content="You are a service shop's phone agent."),
    Message(role="user", content="Can I get an oil change on Friday?"),
]


class LLMConformance:
    """Fixtures to provide: `llm` (the provider) and `reply(text="", tool_calls=())`, which
    makes the provider's next answer that text and those (name, JSON arguments) calls.

    Optional: `wait_s`, seconds to wait for one whole answer.
    """

    @pytest.fixture
    def wait_s(self) -> float:
        return 10.0

    async def _run(self, llm: Any, tools: list[ToolSchema], wait_s: float) -> list[Any]:
        with trio.fail_after(wait_s):
            async with llm.stream(MESSAGES, tools) as events:
                return [event async for event in events]

    async def test_is_an_llm_provider(self, llm: Any) -> None:
        assert isinstance(llm, LLM)

    async def test_text_streams_in_pieces_then_usage(
        self, llm: Any, reply: Any, wait_s: float
    ) -> None:
        text = "Sure, Friday works. We open at half past seven. What time suits you?"
        reply(text=text)
        events = await self._run(llm, [], wait_s)
        deltas = [e.text for e in events if isinstance(e, TextDelta)]
        assert "".join(deltas) == text
        assert len(deltas) > 1, "text must stream, not arrive in one piece"
        usage = [e for e in events if isinstance(e, Usage)]
        assert usage and usage[-1].prompt_tokens > 0
        assert isinstance(events[-1], Usage)

    async def test_tool_call_arrives_complete(self, llm: Any, reply: Any, wait_s: float) -> None:
        args = '{"service": "oil change", "day": "2026-11-27"}'
        reply(tool_calls=[("check_availability", args)])
        events = await self._run(llm, [WEATHER], wait_s)
        (call,) = [e for e in events if isinstance(e, ToolCallRequest)]
        assert call.name == "check_availability" and call.id
        assert msgspec.json.decode(call.arguments) == msgspec.json.decode(args)

    async def test_parallel_tool_calls(self, llm: Any, reply: Any, wait_s: float) -> None:
        a = '{"service": "oil change", "day": "2026-11-27"}'
        b = '{"service": "brakes", "day": "2026-11-28"}'
        reply(tool_calls=[("check_availability", a), ("check_availability", b)])
        events = await self._run(llm, [WEATHER], wait_s)
        calls = [e for e in events if isinstance(e, ToolCallRequest)]
        assert [msgspec.json.decode(c.arguments) for c in calls] == [
            msgspec.json.decode(a),
            msgspec.json.decode(b),
        ]
        assert len({c.id for c in calls}) == 2

    async def test_leaving_early_is_clean(self, llm: Any, reply: Any, wait_s: float) -> None:
        reply(text="one two three four five six seven eight nine ten " * 5)
        with trio.fail_after(wait_s):
            async with llm.stream(MESSAGES, []) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        break
        # The provider is still usable afterwards.
        reply(text="Still here.")
        events2 = await self._run(llm, [], wait_s)
        assert "".join(e.text for e in events2 if isinstance(e, TextDelta)) == "Still here."

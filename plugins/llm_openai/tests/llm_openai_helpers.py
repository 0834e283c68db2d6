"""Shared helpers for the OpenAI plugin's tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hookline.providers import LLMEvent, Message, TextDelta, ToolCallRequest, ToolSchema, Usage
from hookline_llm_openai import OpenAILLM, OpenAISettings
from hookline_testkit.fake_openai import FakeOpenAI

SYSTEM = Message(role="system", content="You are the phone agent of Riverside Auto Service.")
HELLO = [SYSTEM, Message(role="user", content="Hi, can I book an oil change?")]


def make_llm(fake: FakeOpenAI, *, first_token_timeout_s: float = 2.0, **settings: Any) -> OpenAILLM:
    settings.setdefault("total_timeout_s", 5.0)
    settings.setdefault("max_retry_wait_s", 1.0)
    return OpenAILLM(
        OpenAISettings(base_url=fake.url, **settings),
        api_key=fake.api_key,
        first_token_timeout_s=first_token_timeout_s,
    )


async def collect(
    llm: OpenAILLM, messages: Sequence[Message] = HELLO, tools: Sequence[ToolSchema] = ()
) -> list[LLMEvent]:
    async with llm.stream(messages, tools) as events:
        return [ev async for ev in events]


def text_of(events: Sequence[LLMEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def calls_of(events: Sequence[LLMEvent]) -> list[ToolCallRequest]:
    return [e for e in events if isinstance(e, ToolCallRequest)]


def usage_of(events: Sequence[LLMEvent]) -> list[Usage]:
    return [e for e in events if isinstance(e, Usage)]

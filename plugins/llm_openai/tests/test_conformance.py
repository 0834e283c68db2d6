"""hookline's LLM conformance suite, run against the provider and the loopback fake."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

import pytest
from llm_openai_helpers import make_llm

from hookline.testing.conformance import LLMConformance
from hookline_llm_openai import OpenAILLM
from hookline_testkit import fake_openai
from hookline_testkit.fake_openai import FakeOpenAI


class TestOpenAIConformance(LLMConformance):
    @pytest.fixture
    async def llm(self, openai_fake: FakeOpenAI) -> AsyncIterator[OpenAILLM]:
        llm = make_llm(openai_fake)
        try:
            yield llm
        finally:
            await llm.aclose()

    @pytest.fixture
    def reply(self, openai_fake: FakeOpenAI) -> Callable[..., None]:
        def script(text: str = "", tool_calls: Sequence[tuple[str, str]] = ()) -> None:
            calls = [fake_openai.call(name, args) for name, args in tool_calls]
            openai_fake.script(fake_openai.tool_calls(*calls, text=text))

        return script

"""Leaving a response early (barge-in) closes the HTTP stream: the server sees it."""

from __future__ import annotations

import trio
from llm_openai_helpers import HELLO, collect, make_llm, text_of

from hookline.providers import TextDelta
from hookline_testkit.fake_openai import FakeOpenAI, text

LONG = (
    "Our shop is open Monday through Friday from eight to six, and Saturday from nine to two. " * 3
)


async def test_leaving_the_context_early_closes_the_http_stream(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(text(LONG, tokens_per_s=50), text("Still here."))
    llm = make_llm(openai_fake)
    try:
        async with llm.stream(HELLO, []) as events:
            first = await events.__anext__()
        assert isinstance(first, TextDelta)
        req = openai_fake.chats[0]
        with trio.fail_after(5):
            await req.disconnected.wait()
        assert not req.completed.is_set()
        # The provider stays usable after an abandoned response.
        assert text_of(await collect(llm)) == "Still here."
    finally:
        await llm.aclose()


async def test_cancelling_the_response_scope_closes_the_http_stream(
    openai_fake: FakeOpenAI,
) -> None:
    """What the engine does on barge-in: cancel the scope the response runs in."""
    openai_fake.script(text(LONG, tokens_per_s=50))
    llm = make_llm(openai_fake)
    heard: list[str] = []
    try:
        with trio.CancelScope() as response_scope:
            async with llm.stream(HELLO, []) as events:
                async for ev in events:
                    assert isinstance(ev, TextDelta)
                    heard.append(ev.text)
                    if len(heard) == 3:
                        response_scope.cancel()  # e.g. from the turn-taker's task
        assert response_scope.cancelled_caught
        req = openai_fake.chats[0]
        with trio.fail_after(5):
            await req.disconnected.wait()
        assert not req.completed.is_set()
        assert len(heard) == 3
    finally:
        await llm.aclose()


async def test_cancelled_before_the_first_token(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(text("late", ttft_s=10.0))
    llm = make_llm(openai_fake, first_token_timeout_s=20)
    try:
        with trio.move_on_after(0.2) as scope:
            await collect(llm)
        assert scope.cancelled_caught
        with trio.fail_after(5):
            await openai_fake.chats[0].disconnected.wait()
    finally:
        await llm.aclose()

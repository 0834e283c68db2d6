"""Every fault the fake can inject, as the hookline error the engine acts on."""

from __future__ import annotations

import socket

import pytest
import trio
from llm_openai_helpers import HELLO, collect, make_llm, text_of

from hookline.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderProtocolError,
    ProviderTimeout,
    ProviderUnavailable,
)
from hookline.providers import CallInfo, TextDelta
from hookline_llm_openai import OpenAILLM, OpenAISettings
from hookline_testkit.fake_openai import (
    FakeOpenAI,
    dropped_connection,
    http_error,
    malformed_chunk,
    mid_stream_error,
    rate_limited,
    server_error,
    stall,
    text,
    unauthorized,
)


async def run(llm: OpenAILLM) -> list:
    try:
        return await collect(llm)
    finally:
        await llm.aclose()


async def test_401_is_an_auth_error_naming_the_env_var(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(unauthorized())
    with pytest.raises(ProviderAuthError) as info:
        await run(make_llm(openai_fake, api_key_env="SHOP_OPENAI_KEY"))
    message = str(info.value)
    assert "SHOP_OPENAI_KEY" in message and "401" in message
    assert "sk-bad" not in message  # OpenAI's text quotes part of the key: never repeat it
    assert len(openai_fake.chats) == 1  # never retried


async def test_wrong_key_is_refused_by_the_fake(openai_fake: FakeOpenAI) -> None:
    llm = OpenAILLM(
        OpenAISettings(base_url=openai_fake.url), api_key="sk-wrong", first_token_timeout_s=2
    )
    with pytest.raises(ProviderAuthError, match="OPENAI_API_KEY"):
        await run(llm)
    llm = OpenAILLM(
        OpenAISettings(base_url=openai_fake.url), api_key="sk-wrong", first_token_timeout_s=2
    )
    try:
        with pytest.raises(ProviderAuthError, match="OPENAI_API_KEY"):
            await llm.verify()
    finally:
        await llm.aclose()


async def test_429_retried_within_budget_honouring_retry_after(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(
        rate_limited(retry_after=0.05), rate_limited(retry_after=0.05), text("Hello.")
    )
    events = await run(make_llm(openai_fake, max_retry_wait_s=1.0))
    assert text_of(events) == "Hello."
    assert len(openai_fake.chats) == 3
    # Our loop does the retrying: the SDK's own retry counter never moves.
    assert {r.headers.get("x-stainless-retry-count") for r in openai_fake.chats} == {"0"}


async def test_429_beyond_budget_is_unavailable_with_retry_after(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(rate_limited(retry_after=5), text("never reached"))
    with trio.fail_after(3):  # the 5 s retry-after is over the budget: no waiting at all
        with pytest.raises(ProviderUnavailable) as info:
            await run(make_llm(openai_fake, max_retry_wait_s=1.0))
    assert info.value.retry_after == 5
    assert "429" in str(info.value)
    assert len(openai_fake.chats) == 1


async def test_429_insufficient_quota_is_not_retried(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(rate_limited(retry_after=0.01, code="insufficient_quota"), text("no"))
    with pytest.raises(ProviderUnavailable, match="insufficient_quota"):
        await run(make_llm(openai_fake))
    assert len(openai_fake.chats) == 1


async def test_500_retried_then_succeeding(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(server_error(500), text("Back again."))
    events = await run(make_llm(openai_fake, max_retry_wait_s=1.0))
    assert text_of(events) == "Back again."
    assert len(openai_fake.chats) == 2


@pytest.mark.parametrize("status", [500, 503])
async def test_5xx_beyond_budget_is_unavailable(openai_fake: FakeOpenAI, status: int) -> None:
    # The first backoff (at least 0.375 s) is over a 0.2 s budget: one attempt only.
    openai_fake.script(server_error(status), text("never reached"))
    with pytest.raises(ProviderUnavailable, match=str(status)):
        await run(make_llm(openai_fake, max_retry_wait_s=0.2))
    assert len(openai_fake.chats) == 1


async def test_400_is_a_provider_error_not_retried(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(
        http_error(
            400,
            "This model's maximum context length is 128000 tokens.",
            "invalid_request_error",
            "context_length_exceeded",
        )
    )
    with pytest.raises(ProviderError, match="context_length_exceeded") as info:
        await run(make_llm(openai_fake))
    assert type(info.value) is ProviderError
    assert len(openai_fake.chats) == 1


async def test_error_object_mid_stream(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(mid_stream_error(after=2, message="The model is overloaded."))
    seen: list = []
    llm = make_llm(openai_fake)
    with pytest.raises(ProviderUnavailable, match="overloaded"):
        try:
            async with llm.stream(HELLO, []) as events:
                async for ev in events:
                    seen.append(ev)
        finally:
            await llm.aclose()
    assert len(seen) == 2 and all(
        isinstance(e, TextDelta) for e in seen
    )  # text before it came through


async def test_malformed_chunk_is_a_protocol_error(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(malformed_chunk(after=1))
    with pytest.raises(ProviderProtocolError, match="malformed chunk"):
        await run(make_llm(openai_fake))


async def test_dropped_connection_is_unavailable(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(dropped_connection(after=3))
    with pytest.raises(ProviderUnavailable, match="connection lost"):
        await run(make_llm(openai_fake))
    assert openai_fake.chats[0].dropped


async def test_nobody_listening_is_unavailable() -> None:
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    llm = OpenAILLM(
        OpenAISettings(base_url=f"http://127.0.0.1:{port}/v1", max_retry_wait_s=0.0),
        api_key="sk-x",
        first_token_timeout_s=2,
    )
    with pytest.raises(ProviderUnavailable, match="cannot reach"):
        await run(llm)


async def test_no_first_token_in_time_is_a_timeout(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(stall(after=0))
    with pytest.raises(ProviderTimeout, match="first token"):
        await run(make_llm(openai_fake, first_token_timeout_s=0.2))
    with trio.fail_after(5):
        await openai_fake.chats[0].disconnected.wait()  # and the HTTP stream was closed


async def test_slow_time_to_first_token_is_a_timeout(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(text("late", ttft_s=3.0))
    with pytest.raises(ProviderTimeout, match="first token"):
        await run(make_llm(openai_fake, first_token_timeout_s=0.2))


async def test_stall_mid_response_hits_the_total_timeout(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(stall(after=2))
    with pytest.raises(ProviderTimeout, match="took over"):
        await run(make_llm(openai_fake, first_token_timeout_s=0.2, total_timeout_s=0.4))
    with trio.fail_after(5):
        await openai_fake.chats[0].disconnected.wait()


async def test_retry_log_lines_name_the_call(openai_fake: FakeOpenAI, caplog) -> None:
    openai_fake.script(rate_limited(retry_after=0.01), text("Hello."))
    llm = make_llm(openai_fake, max_retry_wait_s=1.0)
    caplog.set_level("INFO", logger="hookline.llm.openai")
    try:
        async with llm.stream(HELLO, [], CallInfo(call_id="c0ffee")) as events:
            assert text_of([ev async for ev in events]) == "Hello."
    finally:
        await llm.aclose()
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert retries and all(r.call_id == "c0ffee" for r in retries)  # shown by the formatter

"""The fake itself: its frames are what the official SDK expects from OpenAI."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from hookline_testkit.fake_openai import (
    FakeOpenAI,
    call,
    mid_stream_error,
    rate_limited,
    text,
    tool_calls,
)


def sdk(fake: FakeOpenAI) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=fake.api_key, base_url=fake.url, max_retries=0)


async def test_sse_framing_byte_for_byte(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(text("Hi there."))
    body = {
        "model": "gpt-4o",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hello"}],
    }
    headers = {"authorization": f"Bearer {openai_fake.api_key}"}
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{openai_fake.url}/chat/completions", json=body, headers=headers)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    raw = r.text
    assert "event:" not in raw
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    # stdlib json on purpose: an independent decoder checks the fake's SSE framing.
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: ") for e in events[:-1])
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert {c["created"] for c in chunks} == {chunks[0]["created"]}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    assert all(c["usage"] is None for c in chunks[:-1])
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert content == "Hi there."


async def test_the_sdk_parses_the_stream(openai_fake: FakeOpenAI) -> None:
    args = '{"plate": "ABC123"}'
    openai_fake.script(tool_calls(call("lookup", args), call("lookup", "{}"), text="One sec."))
    client = sdk(openai_fake)
    try:
        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
    finally:
        await client.close()
    merged: dict[int, str] = {}
    for c in chunks:
        for ch in c.choices:
            for tc in ch.delta.tool_calls or []:
                merged[tc.index] = merged.get(tc.index, "") + (tc.function.arguments or "")
    assert merged == {0: args, 1: "{}"}
    assert chunks[-1].usage is not None and chunks[-1].choices == []


async def test_the_sdk_sees_errors_as_openai_does(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(rate_limited(retry_after=2), mid_stream_error(after=1, message="boom"))
    client = sdk(openai_fake)
    try:
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        assert info.value.response.headers["retry-after"] == "2"
        assert info.value.code == "rate_limit_exceeded"
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        with pytest.raises(openai.APIError, match="boom"):
            async for _ in stream:
                pass
    finally:
        await client.close()


async def test_non_streaming_completion(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(tool_calls(call("lookup", '{"plate": "X"}', id="call_7"), text="Checking."))
    client = sdk(openai_fake)
    try:
        done = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    finally:
        await client.close()
    msg = done.choices[0].message
    assert msg.content == "Checking." and done.choices[0].finish_reason == "tool_calls"
    assert msg.tool_calls is not None and msg.tool_calls[0].id == "call_7"
    assert done.usage is not None and done.usage.completion_tokens > 0

"""Streaming against the loopback fake: text, tool calls, usage, and what was sent."""

from __future__ import annotations

import json

import msgspec
import pytest
import trio
from llm_openai_helpers import HELLO, SYSTEM, calls_of, collect, make_llm, text_of, usage_of

from hookline.providers import LLM, Message, TextDelta, ToolCallRequest, ToolSchema, Usage
from hookline.tools import tool
from hookline_testkit.fake_openai import FakeOpenAI, call, pieces, text, tool_calls


class BookSlot(msgspec.Struct):
    start: str
    service: str


class Lookup(msgspec.Struct):
    plate: str
    state: str | None = None


@tool
async def book_slot(params: BookSlot, ctx) -> dict:
    """Book a service appointment."""
    return {}


@tool
async def lookup(params: Lookup, ctx) -> dict:
    """Look up a vehicle by plate."""
    return {}


async def test_provider_satisfies_the_llm_protocol(openai_fake: FakeOpenAI) -> None:
    llm = make_llm(openai_fake)
    assert isinstance(llm, LLM)
    await llm.aclose()


async def test_text_streams_as_deltas_then_usage(openai_fake: FakeOpenAI) -> None:
    answer = "Sure! We have an opening Monday at ten. Would that work?"
    openai_fake.script(text(answer, prompt_tokens=57, cached_tokens=32))
    llm = make_llm(openai_fake)
    try:
        events = await collect(llm)
    finally:
        await llm.aclose()
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) == len(pieces(answer)) > 5  # streamed piece by piece, not at once
    assert text_of(events) == answer
    assert events[-1] == Usage(prompt_tokens=57, completion_tokens=len(deltas), cached_tokens=32)
    assert calls_of(events) == []


async def test_request_carries_settings_and_history(openai_fake: FakeOpenAI) -> None:
    llm = make_llm(
        openai_fake,
        model="gpt-4o-mini",
        temperature=0.2,
        max_tokens=120,
        organization="org-riverside",
        project="proj_phone",
    )
    try:
        await collect(llm)
    finally:
        await llm.aclose()
    (req,) = openai_fake.chats
    chat = req.chat
    assert chat is not None
    assert req.headers["authorization"] == f"Bearer {openai_fake.api_key}"
    assert req.headers["openai-organization"] == "org-riverside"
    assert req.headers["openai-project"] == "proj_phone"
    assert chat.model == "gpt-4o-mini"
    assert chat.stream is True
    assert chat.stream_options is not None and chat.stream_options.include_usage
    assert chat.temperature == 0.2
    assert chat.max_completion_tokens == 120 and chat.max_tokens is None
    assert [(m.role, m.content) for m in chat.messages] == [(m.role, m.content) for m in HELLO]
    # Without tools, no tool keys: OpenAI rejects parallel_tool_calls without tools.
    assert chat.tools == [] and chat.tool_choice is None and chat.parallel_tool_calls is None


async def test_empty_assistant_messages_are_not_sent(openai_fake: FakeOpenAI) -> None:
    history = [
        *HELLO,
        Message(role="assistant", content=""),
        Message(role="user", content="Hello?"),
    ]
    llm = make_llm(openai_fake)
    try:
        await collect(llm, history)
    finally:
        await llm.aclose()
    chat = openai_fake.chats[0].chat
    assert chat is not None
    assert [m.role for m in chat.messages] == ["system", "user", "user"]


async def test_max_tokens_param_for_older_compatible_servers(openai_fake: FakeOpenAI) -> None:
    llm = make_llm(openai_fake, max_tokens=50, max_tokens_param="max_tokens", temperature=None)
    try:
        await collect(llm)
    finally:
        await llm.aclose()
    chat = openai_fake.chats[0].chat
    assert chat is not None
    assert chat.max_tokens == 50 and chat.max_completion_tokens is None
    assert b'"temperature"' not in openai_fake.chats[0].body


async def test_tool_round_trip_with_fragmented_arguments(openai_fake: FakeOpenAI) -> None:
    args = json.dumps({"start": "2026-12-01T10:00:00-06:00", "service": "oil change"})
    openai_fake.script(
        tool_calls(call("book_slot", args, id="call_abc"), fragment=2),
        text("You're booked for December first at ten."),
    )
    tools = [book_slot.schema(), lookup.schema()]
    llm = make_llm(openai_fake)
    try:
        first = await collect(llm, HELLO, tools)
        assert calls_of(first) == [ToolCallRequest(id="call_abc", name="book_slot", arguments=args)]
        assert text_of(first) == ""
        assert len(usage_of(first)) == 1
        history = [
            *HELLO,
            Message(role="assistant", content=None, tool_calls=calls_of(first)),
            Message(role="tool", tool_call_id="call_abc", content='{"ok":true}'),
        ]
        second = await collect(llm, history, tools)
    finally:
        await llm.aclose()
    assert text_of(second) == "You're booked for December first at ten."

    sent = openai_fake.chats[1].chat
    assert sent is not None
    assistant, result = sent.messages[-2], sent.messages[-1]
    assert assistant.role == "assistant" and assistant.content is None
    assert assistant.tool_calls is not None
    (tc,) = assistant.tool_calls
    assert (tc.id, tc.type, tc.function.name, tc.function.arguments) == (
        "call_abc",
        "function",
        "book_slot",
        args,
    )
    assert (result.role, result.tool_call_id, result.content) == ("tool", "call_abc", '{"ok":true}')

    # Tools as function definitions; strict only where the schema allows it.
    assert sent.tool_choice == "auto" and sent.parallel_tool_calls is True
    by_name = {t.function.name: t.function for t in sent.tools}
    assert by_name["book_slot"].strict is True
    assert by_name["book_slot"].parameters["additionalProperties"] is False
    assert set(by_name["book_slot"].parameters["required"]) == {"start", "service"}
    assert by_name["lookup"].strict is None  # `state` is optional: not strict-compatible
    assert "additionalProperties" not in by_name["lookup"].parameters
    assert by_name["lookup"].description == "Look up a vehicle by plate."


@pytest.mark.parametrize("interleave", [False, True])
async def test_parallel_tool_calls(openai_fake: FakeOpenAI, interleave: bool) -> None:
    a = json.dumps({"plate": "ABC123", "state": "IL"})
    b = json.dumps({"start": "2026-12-01T10:00:00Z", "service": "tire rotation"})
    openai_fake.script(
        tool_calls(
            call("lookup", a), call("book_slot", b), text="Let me check.", interleave=interleave
        )
    )
    llm = make_llm(openai_fake)
    try:
        events = await collect(llm, HELLO, [book_slot.schema(), lookup.schema()])
    finally:
        await llm.aclose()
    calls = calls_of(events)
    assert [(c.name, c.arguments) for c in calls] == [("lookup", a), ("book_slot", b)]
    assert len({c.id for c in calls}) == 2
    assert text_of(events) == "Let me check."
    # Text first, then the complete calls, usage last.
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("ToolCallRequest") > max(i for i, k in enumerate(kinds) if k == "TextDelta")
    assert kinds[-1] == "Usage"


async def test_responder_answers_from_the_request(openai_fake: FakeOpenAI) -> None:
    openai_fake.responder = lambda req: text(f"You said: {req.chat.messages[-1].content}")
    llm = make_llm(openai_fake)
    try:
        events = await collect(llm, [SYSTEM, Message(role="user", content="tow please")])
    finally:
        await llm.aclose()
    assert text_of(events) == "You said: tow please"


async def test_one_client_reused_across_responses(openai_fake: FakeOpenAI) -> None:
    llm = make_llm(openai_fake)
    try:
        client = llm.client
        for _ in range(3):
            assert text_of(await collect(llm)) == "Okay."
        assert llm.client is client
    finally:
        await llm.aclose()
    assert len(openai_fake.chats) == 3
    assert all(r.completed.is_set() and not r.disconnected.is_set() for r in openai_fake.chats)


async def test_concurrent_responses(openai_fake: FakeOpenAI) -> None:
    openai_fake.responder = lambda req: text(
        f"answer {req.chat.messages[-1].content}", tokens_per_s=200
    )
    llm = make_llm(openai_fake)
    results: dict[int, str] = {}

    async def one(i: int) -> None:
        results[i] = text_of(await collect(llm, [SYSTEM, Message(role="user", content=str(i))]))

    try:
        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(one, i)
    finally:
        await llm.aclose()
    assert results == {i: f"answer {i}" for i in range(5)}


async def test_verify_accepts_a_good_key(openai_fake: FakeOpenAI) -> None:
    llm = make_llm(openai_fake)
    try:
        await llm.verify()
    finally:
        await llm.aclose()
    assert [r.path for r in openai_fake.requests] == ["/v1/models"]


def test_tool_schema_is_strict_for_nested_closed_objects() -> None:
    from hookline_llm_openai.wire import wire_tool

    schema = ToolSchema(
        name="order",
        description="Order parts.",
        parameters={
            "type": "object",
            "properties": {
                "parts": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"sku": {"type": "string"}},
                        "required": ["sku"],
                    },
                }
            },
            "required": ["parts"],
        },
        strict=True,
    )
    fn = wire_tool(schema)["function"]
    assert fn["strict"] is True
    assert fn["parameters"]["additionalProperties"] is False
    assert fn["parameters"]["properties"]["parts"]["items"]["additionalProperties"] is False
    assert "additionalProperties" not in schema.parameters  # the caller's schema is untouched

    loose = msgspec.structs.replace(
        schema,
        parameters={**schema.parameters, "properties": {"parts": {"type": "array", "items": {
            "type": "object", "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
            "required": ["sku"]}}}},
    )  # fmt: skip
    fn = wire_tool(loose)["function"]
    assert "strict" not in fn and "additionalProperties" not in fn["parameters"]


def test_tool_message_without_call_id_is_a_clear_error() -> None:
    from hookline_llm_openai.wire import wire_message

    with pytest.raises(ValueError, match="tool_call_id"):
        wire_message(Message(role="tool", content="{}"))


def test_sse_parser_handles_split_reads_crlf_comments_and_multiline_data() -> None:
    from hookline_llm_openai.wire import SSEParser

    wire = (
        b": keep-alive comment\r\n\r\n"
        b'data: {"a":1}\r\n\r\n'
        b"event: ignored\ndata: line one\ndata:line two\n\n"
        b"data: [DONE]\n\n"
    )
    whole = SSEParser().feed(wire)
    assert whole == [b'{"a":1}', b"line one\nline two", b"[DONE]"]
    parser = SSEParser()
    split = [ev for i in range(len(wire)) for ev in parser.feed(wire[i : i + 1])]
    assert split == whole
    unterminated = SSEParser()
    assert unterminated.feed(b"data: tail") == []
    assert unterminated.close() == [b"tail"]


async def test_the_wire_body_is_the_request_body_as_built(openai_fake: FakeOpenAI) -> None:
    """The body goes through the SDK untransformed (as `extra_body`): exactly the JSON
    `request_body` built, every key and value, tools and history included."""
    history = [
        *HELLO,
        Message(role="assistant", content="Sure."),
        Message(role="user", content="Book it."),
    ]
    tools = [book_slot.schema(), lookup.schema()]
    llm = make_llm(openai_fake, temperature=0.3, max_tokens=80)
    try:
        await collect(llm, history, tools)
        expected = llm.request_body(history, tools)
    finally:
        await llm.aclose()
    (req,) = openai_fake.chats
    assert json.loads(req.body) == json.loads(json.dumps(expected))

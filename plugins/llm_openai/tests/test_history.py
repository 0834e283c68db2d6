"""History trimming: budget, whole turns, tool calls never separated from their results."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st
from llm_openai_helpers import SYSTEM, collect, make_llm

from hookline.providers import Message, ToolCallRequest
from hookline_llm_openai.history import cut_points, estimate_tokens, trim_history
from hookline_testkit.fake_openai import FakeOpenAI


def tokens(messages: list[Message]) -> int:
    return sum(estimate_tokens(m) for m in messages)


@st.composite
def conversations(draw: st.DrawFn) -> list[Message]:
    """System prompt(s), then users, assistants, tool calls and results in any legal-ish
    order: results may come late, even after the caller spoke again (barge-in)."""
    ids = itertools.count()
    content = st.text(alphabet="abcdefgh ", max_size=120)
    out = [Message(role="system", content=draw(content)) for _ in range(draw(st.integers(0, 2)))]
    pending: list[str] = []
    for _ in range(draw(st.integers(0, 25))):
        step = draw(st.sampled_from(["user", "assistant", "calls", "result", "result"]))
        if step == "user":
            out.append(Message(role="user", content=draw(content)))
        elif step == "assistant":
            out.append(Message(role="assistant", content=draw(content)))
        elif step == "calls":
            calls = [
                ToolCallRequest(id=f"call_{next(ids)}", name="book", arguments=draw(content))
                for _ in range(draw(st.integers(1, 3)))
            ]
            out.append(Message(role="assistant", content=None, tool_calls=calls))
            pending.extend(c.id for c in calls)
        elif pending:
            cid = pending.pop(draw(st.integers(0, len(pending) - 1)))
            out.append(Message(role="tool", tool_call_id=cid, content=draw(content)))
    if draw(st.booleans()):
        out.extend(Message(role="tool", tool_call_id=cid, content="late") for cid in pending)
    return out


@settings(max_examples=300, deadline=None)
@given(conversations(), st.integers(1, 1500))
def test_trimming_invariants(history: list[Message], budget: int) -> None:
    kept = trim_history(history, budget)
    head = next((i for i, m in enumerate(history) if m.role != "system"), len(history))
    system, rest = history[:head], history[head:]

    # The system prompt is never dropped and stays first.
    assert kept[:head] == system
    # What follows is a suffix of the history starting at a legal cut: the start, or a
    # user message.
    tail = kept[head:]
    cut = len(rest) - len(tail)
    assert rest[cut:] == tail
    assert cut in cut_points(rest)
    assert cut == 0 or rest[cut].role == "user"

    # Tool calls and their results stay together.
    issued = {c.id for m in tail for c in m.tool_calls}
    answered = {m.tool_call_id for m in tail if m.role == "tool"}
    all_issued = {c.id for m in history for c in m.tool_calls}
    assert answered & all_issued <= issued  # no result without its call
    for m in history:
        if m.role == "tool" and m.tool_call_id in issued:
            assert m in tail  # no kept call without its results

    # Within budget, unless only the latest turn is left (then kept whole); and nothing
    # that would have fitted was dropped.
    cuts = cut_points(rest)
    if tokens(kept) > budget:
        assert cut == cuts[-1]
    earlier = [c for c in cuts if c < cut]
    if earlier:
        assert tokens(system + rest[earlier[-1] :]) > budget


def test_small_budget_keeps_the_prompt_and_the_last_turn() -> None:
    call = ToolCallRequest(id="call_1", name="lookup", arguments='{"plate":"ABC"}')
    history = [
        SYSTEM,
        Message(role="user", content="old question " * 50),
        Message(role="assistant", content="old answer " * 50),
        Message(role="user", content="Where is my car?"),
        Message(role="assistant", content=None, tool_calls=[call]),
        Message(role="user", content="hello?"),  # spoke while the tool ran
        Message(role="tool", tool_call_id="call_1", content='{"status":"ready"}'),
    ]
    kept = trim_history(history, 60)
    # The user message between the call and its result is no place to cut.
    assert kept == [SYSTEM, *history[3:]]
    assert trim_history(history, 100_000) == history


async def test_stream_sends_the_trimmed_history(openai_fake: FakeOpenAI) -> None:
    history = [SYSTEM]
    for i in range(40):
        history += [
            Message(role="user", content=f"question {i} " + "x" * 200),
            Message(role="assistant", content=f"answer {i} " + "y" * 200),
        ]
    history.append(Message(role="user", content="last question"))
    llm = make_llm(openai_fake, context_tokens=1000)
    try:
        await collect(llm, history)
    finally:
        await llm.aclose()
    chat = openai_fake.chats[0].chat
    assert chat is not None
    sent = chat.messages
    assert sent[0].role == "system" and sent[0].content == SYSTEM.content
    assert sent[1].role == "user"
    assert sent[-1].content == "last question"
    assert 3 < len(sent) < len(history)
    assert [m.content for m in sent[1:]] == [
        m.content for m in history[len(history) - len(sent) + 1 :]
    ]

"""One agent response: stream the LLM, cut sentences, speak them, run tool rounds.

The same loop serves a phone call and `hookline chat`: it reads and writes only an
`Agent` (what every response is made with) and a `ResponseSink` (where this response
goes: the call's speaker and records, or the console).

In a call it runs inside its own cancel scope (owned by the call session), so barge-in
is one `scope.cancel()`. Side-effect tools are shielded once started: they finish and
their result enters the history even when the caller interrupts. A tool call that had
not started when the scope was cancelled never runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

import trio

from ..config import PolicyConfig
from ..errors import ProviderAuthError, ProviderError
from ..providers import LLM, CallInfo, Message, TextDelta, ToolCallRequest, ToolSchema, Usage
from ..tools import CallControl, Tool, ToolContext
from .metrics import TurnTiming
from .sentences import SentenceChunker
from .speaker import SpeechFailed
from .tool_runner import ToolOutcome, run_tool

__all__ = ["Agent", "PhraseName", "ResponseSink", "repair_history", "respond"]

PhraseName = Literal["filler", "fallback"]


@dataclass(frozen=True)
class Agent:
    """What every response of one conversation is made with."""

    llm: LLM
    tools: Mapping[str, Tool]
    policy: PolicyConfig
    call: CallInfo
    control: CallControl  # what tools may do to the conversation (end it, transfer it)
    log: logging.LoggerAdapter
    schemas: list[ToolSchema] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "schemas", [t.schema() for t in self.tools.values()])


class ResponseSink(Protocol):
    """Where one response (for agent turn `turn`) goes, and the history it extends."""

    turn: int
    timing: TurnTiming
    history: list[Message]

    async def say(self, text: str, message: Message) -> None:
        """Speak one sentence of `message` (its content already holds it). Raises
        `SpeechFailed` when the speech output broke: the response cannot go on."""
        ...

    async def phrase(self, name: PhraseName, message: Message | None = None) -> None:
        """Say a configured phrase; with `message`, its text becomes that message's
        content. A filler is said at most once a turn, and only into silence."""
        ...

    def filler_unless(self, delay: float, answered: trio.Event) -> None:
        """Unless `answered` is set within `delay`, say a filler (in the background)."""
        ...

    def usage(self, usage: Usage) -> None: ...

    def llm_failed(self, error: ProviderError) -> None:
        """The LLM failed after its own retries (the fallback phrase follows)."""
        ...

    def tool_started(self, request: ToolCallRequest) -> None: ...

    def tool_finished(self, request: ToolCallRequest, outcome: ToolOutcome) -> None: ...


async def respond(agent: Agent, sink: ResponseSink) -> None:
    """Answer the history's last user turn: at most `max_tool_rounds` tool rounds, and a
    last round that offers no tools."""
    policy, timing = agent.policy, sink.timing
    timing.llm_start = trio.current_time()
    for round_no in range(policy.max_tool_rounds + 1):
        if round_no:
            await trio.lowlevel.checkpoint()  # a response ended by a tool asks no more
        tools = agent.schemas if round_no < policy.max_tool_rounds else []
        messages = list(sink.history)
        message = Message(role="assistant", content="")
        sink.history.append(message)
        chunker = SentenceChunker()
        requests: list[ToolCallRequest] = []
        # No first token by the deadline: a cached filler plays while the LLM (and its
        # own retries) keeps going, so a stall is not heard as dead air.
        answered = trio.Event()
        sink.filler_unless(policy.llm_filler_after_s, answered)
        try:
            async with agent.llm.stream(messages, tools, agent.call) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        answered.set()
                        timing.llm_first_token = timing.llm_first_token or trio.current_time()
                        for sentence in chunker.push(event.text):
                            await _say(sink, sentence, message)
                    elif isinstance(event, ToolCallRequest):
                        answered.set()
                        timing.llm_first_token = timing.llm_first_token or trio.current_time()
                        requests.append(event)
                    elif isinstance(event, Usage):
                        sink.usage(event)
            if rest := chunker.flush():
                await _say(sink, rest, message)
        except (ProviderAuthError, SpeechFailed):
            raise  # no point going on: the call ends with an apology
        except ProviderError as e:  # the LLM's: its own retries are spent
            answered.set()  # the fallback line, not a filler after it
            sink.llm_failed(e)
            fallback = Message(role="assistant", content="")
            sink.history.append(fallback)
            await sink.phrase("fallback", fallback)
            return
        finally:
            answered.set()
        if not requests:
            return
        if not tools:
            # Out of rounds (or the model called a tool it was not offered): stop here.
            agent.log.warning("ignoring %d tool calls past the round limit", len(requests))
            return
        await _run_tools(agent, sink, message, requests)


def repair_history(history: list[Message]) -> None:
    """After a response (cancelled or not): no empty assistant messages, no tool call
    without its result (the LLM APIs reject both)."""
    answered = {m.tool_call_id for m in history if m.role == "tool"}
    kept: list[Message] = []
    for m in history:
        if m.role == "assistant":
            m.tool_calls = [c for c in m.tool_calls if c.id in answered]
            if not m.content and not m.tool_calls:
                continue
        kept.append(m)
    history[:] = kept


async def _say(sink: ResponseSink, sentence: str, message: Message) -> None:
    message.content = f"{message.content} {sentence}".strip()
    await sink.say(sentence, message)


async def _filler_after(sink: ResponseSink, delay: float) -> None:
    await trio.sleep(delay)
    await sink.phrase("filler")


async def _run_tools(
    agent: Agent, sink: ResponseSink, message: Message, requests: list[ToolCallRequest]
) -> None:
    policy = agent.policy
    for request in requests:
        await trio.lowlevel.checkpoint()  # a cancelled response starts no further tool
        tool = agent.tools.get(request.name)
        message.tool_calls.append(request)
        sink.tool_started(request)
        ctx = ToolContext(
            call=agent.call,
            control=agent.control,
            logger=agent.log,
            turn=sink.turn,
            tool_call_id=request.id,
        )
        shielded = tool is not None and tool.side_effect
        with trio.CancelScope(shield=shielded):
            async with trio.open_nursery() as nursery:
                if tool is not None and tool.filler:
                    nursery.start_soon(_filler_after, sink, policy.filler_after_s)
                outcome = await run_tool(tool, request, ctx, policy.tool_timeout_s)
                nursery.cancel_scope.cancel()
            sink.timing.tool_ms.append(outcome.latency_ms)
            sink.history.append(
                Message(role="tool", tool_call_id=request.id, content=outcome.result)
            )
            sink.tool_finished(request, outcome)

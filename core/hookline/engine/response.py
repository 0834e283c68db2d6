"""One agent response: stream the LLM, cut sentences, speak them, run tool rounds.

It runs inside its own cancel scope (owned by the call session), so barge-in is one
`scope.cancel()`. Side-effect tools are shielded once started: they finish and their
result enters the history even when the caller interrupts. A tool call that had not
started when the scope was cancelled never runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from ..errors import ProviderAuthError, ProviderError
from ..events import ToolCallFinished, ToolCallStarted, UsageReported
from ..providers import Message, TextDelta, ToolCallRequest, Usage
from ..tools import ToolContext
from .metrics import TurnTiming
from .sentences import SentenceChunker
from .tool_runner import run_tool

if TYPE_CHECKING:
    from .call import CallSession

__all__ = ["respond"]


async def respond(session: CallSession, turn: int, timing: TurnTiming) -> None:
    runtime = session.runtime
    policy = runtime.config.policy
    llm_name = f"llm/{runtime.provider_names['llm']}"
    timing.llm_start = trio.current_time()
    for round_no in range(policy.max_tool_rounds + 1):
        tools = session.tool_schemas if round_no < policy.max_tool_rounds else []
        messages = list(session.history)
        message = Message(role="assistant", content="")
        session.history.append(message)
        chunker = SentenceChunker()
        requests: list[ToolCallRequest] = []
        # No first token by the deadline: a cached filler plays while the LLM (and its
        # own retries) keeps going, so a stall is not heard as dead air.
        answered = trio.Event()
        session.filler_unless(policy.llm_filler_after_s, turn, answered)
        try:
            async with runtime.llm.stream(messages, tools, session.info) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        answered.set()
                        timing.llm_first_token = timing.llm_first_token or trio.current_time()
                        for sentence in chunker.push(event.text):
                            await session.say(sentence, turn, message, timing)
                    elif isinstance(event, ToolCallRequest):
                        answered.set()
                        timing.llm_first_token = timing.llm_first_token or trio.current_time()
                        requests.append(event)
                    elif isinstance(event, Usage):
                        session.add_usage(
                            UsageReported(
                                t=trio.current_time(),
                                turn=turn,
                                provider=llm_name,
                                prompt_tokens=event.prompt_tokens,
                                completion_tokens=event.completion_tokens,
                                cached_tokens=event.cached_tokens,
                            )
                        )
            if rest := chunker.flush():
                await session.say(rest, turn, message, timing)
        except ProviderAuthError:
            raise  # no point going on: the call ends with an apology
        except ProviderError as e:
            answered.set()  # the fallback line, not a filler after it
            if e.provider.startswith("tts/"):
                raise
            await session.llm_failed(e, turn)
            return
        finally:
            answered.set()
        if not requests:
            return
        if not tools:
            # Out of rounds (or the model called a tool it was not offered): stop here.
            session.log.warning("ignoring %d tool calls past the round limit", len(requests))
            return
        await _run_tools(session, turn, message, requests, timing)


async def _run_tools(
    session: CallSession,
    turn: int,
    message: Message,
    requests: list[ToolCallRequest],
    timing: TurnTiming,
) -> None:
    policy = session.runtime.config.policy
    for request in requests:
        await trio.lowlevel.checkpoint()  # a cancelled response starts no further tool
        tool = session.runtime.tools.get(request.name)
        message.tool_calls.append(request)
        session.emit(
            ToolCallStarted(
                t=trio.current_time(),
                turn=turn,
                call_id=request.id,
                tool=request.name,
                arguments=request.arguments,
            )
        )
        ctx = ToolContext(
            call=session.info,
            control=session,
            logger=session.log,
            turn=turn,
            tool_call_id=request.id,
        )
        shielded = tool is not None and tool.side_effect
        with trio.CancelScope(shield=shielded):
            async with trio.open_nursery() as nursery:
                if tool is not None and tool.filler:
                    nursery.start_soon(session.filler_after, policy.filler_after_s, turn)
                outcome = await run_tool(tool, request, ctx, policy.tool_timeout_s)
                nursery.cancel_scope.cancel()
            timing.tool_ms.append(outcome.latency_ms)
            session.history.append(
                Message(role="tool", tool_call_id=request.id, content=outcome.result)
            )
            session.tool_finished(
                ToolCallFinished(
                    t=trio.current_time(),
                    turn=turn,
                    call_id=request.id,
                    tool=request.name,
                    ok=outcome.ok,
                    result=outcome.result,
                    error=outcome.error,
                    latency_ms=round(outcome.latency_ms, 3),
                ),
                request.arguments,
            )

"""`hookline chat`: the configured LLM and tools, with typed text instead of audio.

Useful to try prompts and tools before a phone is involved. Only the LLM and the tools
are built; telephony, STT and TTS are not touched (so their keys are not needed).
"""

from __future__ import annotations

import logging
import sys

import trio

from .config import Config
from .engine.sentences import SentenceChunker
from .engine.tool_runner import run_tool
from .plugins import Plugins
from .providers import CallInfo, Message, TextDelta, ToolCallRequest
from .runtime import Runtime, new_call_id
from .testing.harness import ScriptedTelephony
from .testing.scripted import ScriptedSTT, ScriptedTTS
from .tools import ToolContext

__all__ = ["chat_loop"]


class _ChatControl:
    def __init__(self) -> None:
        self.ended = False

    async def end_call(self, goodbye: str | None) -> None:
        sys.stdout.write(f"agent> {goodbye or '(goodbye)'}\n[call ended]\n")
        self.ended = True

    async def transfer(self, number: str, announcement: str | None) -> None:
        sys.stdout.write(f"agent> {announcement or ''}\n[transferred to {number}]\n")
        self.ended = True


async def chat_loop(config: Config, plugins: Plugins) -> None:
    runtime = Runtime(
        config,
        plugins,
        providers={"telephony": ScriptedTelephony(), "stt": ScriptedSTT(), "tts": ScriptedTTS()},
    )
    info = CallInfo(call_id=new_call_id(), from_number="+15555550100", to_number="chat")
    control = _ChatControl()
    log = logging.LoggerAdapter(logging.getLogger("hookline.chat"), {"call_id": info.call_id})
    history: list[Message] = []
    if config.agent.instructions:
        history.append(Message(role="system", content=config.agent.instructions))
    history.append(Message(role="assistant", content=config.agent.greeting))
    schemas = [t.schema() for t in runtime.tools.values()]
    sys.stdout.write(f"agent> {config.agent.greeting}\n")
    while not control.ended:
        line = await trio.to_thread.run_sync(input, "you> ")
        if not line.strip():
            continue
        history.append(Message(role="user", content=line))
        for _ in range(config.policy.max_tool_rounds):
            message = Message(role="assistant", content="")
            calls: list[ToolCallRequest] = []
            chunker = SentenceChunker()
            async with runtime.llm.stream(list(history), schemas) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        for sentence in chunker.push(event.text):
                            sys.stdout.write(f"agent> {sentence}\n")
                            message.content = f"{message.content} {sentence}".strip()
                    elif isinstance(event, ToolCallRequest):
                        calls.append(event)
            if rest := chunker.flush():
                sys.stdout.write(f"agent> {rest}\n")
                message.content = f"{message.content} {rest}".strip()
            message.tool_calls = calls
            history.append(message)
            for call in calls:
                ctx = ToolContext(call=info, control=control, logger=log, tool_call_id=call.id)
                outcome = await run_tool(
                    runtime.tools.get(call.name), call, ctx, config.policy.tool_timeout_s
                )
                sys.stdout.write(f"  [{call.name}({call.arguments}) -> {outcome.result}]\n")
                history.append(Message(role="tool", tool_call_id=call.id, content=outcome.result))
            if not calls or control.ended:
                break

"""`hookline chat`: the configured LLM and tools, with typed text instead of audio.

Useful to try prompts and tools before a phone is involved. Only the LLM and the tools
are built; telephony, STT and TTS are not touched (so their keys are not needed). Each
typed line is answered by the same `respond()` a phone call runs (tool rounds, their
bound, fillers, the fallback line), with a sink that prints instead of speaking.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import msgspec
import trio

from .config import Config
from .engine.metrics import TurnTiming
from .engine.response import Agent, PhraseName, repair_history, respond
from .engine.tool_runner import ToolOutcome
from .errors import ConfigError, ProviderError
from .logs import call_log
from .plugins import Plugins
from .prompt import system_messages
from .providers import CallInfo, Message, ToolCallRequest, Usage
from .runtime import Runtime, new_call_id
from .testing.harness import ScriptedTelephony
from .testing.scripted import ScriptedSTT, ScriptedTTS

__all__ = ["OFFLINE_KEY_ENV", "OfflineLLM", "chat", "chat_loop", "use_base_url"]

Write = Callable[[str], object]


class _ChatControl:
    """What tools may do to the conversation: both end it (and the response at once)."""

    def __init__(self, write: Write) -> None:
        self.write = write
        self.ended = False
        self.response: trio.CancelScope | None = None

    async def end_call(self, goodbye: str | None) -> None:
        self.write(f"agent> {goodbye or '(goodbye)'}\n[call ended]\n")
        self._end()

    async def transfer(self, number: str, announcement: str | None) -> None:
        self.write(f"agent> {announcement or ''}\n[transferred to {number}]\n")
        self._end()

    def _end(self) -> None:
        self.ended = True
        if self.response is not None:
            self.response.cancel()


class _ConsoleResponse:
    """One response as `respond()` sees it (a `ResponseSink`), printed."""

    def __init__(
        self, config: Config, history: list[Message], turn: int, write: Write, nursery: trio.Nursery
    ) -> None:
        self.turn = turn
        self.timing = TurnTiming()
        self.history = history
        self._config = config
        self._write = write
        self._nursery = nursery
        self._filler_said = False

    async def say(self, text: str, message: Message) -> None:
        self._write(f"agent> {text}\n")

    async def phrase(self, name: PhraseName, message: Message | None = None) -> None:
        agent = self._config.agent
        if name == "fallback":
            text = agent.fallback_line
        elif agent.fillers and not self._filler_said:
            self._filler_said = True
            text = agent.fillers[(self.turn // 2) % len(agent.fillers)]
        else:
            return
        if message is not None:
            message.content = text
        self._write(f"agent> {text}\n")

    def filler_unless(self, delay: float, answered: trio.Event) -> None:
        self._nursery.start_soon(self._filler_unless, delay, answered)

    async def _filler_unless(self, delay: float, answered: trio.Event) -> None:
        with trio.move_on_after(delay):
            await answered.wait()
        if not answered.is_set():
            await self.phrase("filler")

    def usage(self, usage: Usage) -> None:
        pass

    def llm_failed(self, error: ProviderError) -> None:
        self._write(f"  [the LLM failed: {error}]\n")

    def tool_started(self, request: ToolCallRequest) -> None:
        pass

    def tool_finished(self, request: ToolCallRequest, outcome: ToolOutcome) -> None:
        self._write(f"  [{request.name}({request.arguments}) -> {outcome.result}]\n")


async def _read_line() -> str | None:
    try:
        return await trio.to_thread.run_sync(input, "you> ")
    except EOFError:
        return None


async def chat(
    runtime: Runtime,
    read_line: Callable[[], Awaitable[str | None]] = _read_line,
    write: Write = sys.stdout.write,
) -> list[Message]:
    """Converse on `runtime` until a tool ends the conversation or input ends (None).
    Returns the history."""
    config = runtime.config
    info = CallInfo(call_id=new_call_id(), from_number="+15555550100", to_number="chat")
    control = _ChatControl(write)
    agent = Agent(
        runtime.llm,
        runtime.tools,
        config.policy,
        info,
        control,
        call_log("hookline.chat", info.call_id),
    )
    history: list[Message] = system_messages(runtime, info)  # rendered as for a call
    history.append(Message(role="assistant", content=config.agent.greeting))
    write(f"agent> {config.agent.greeting}\n")
    turn = 0  # turns alternate as in a call: the greeting is 0, the caller's first is 1
    async with trio.open_nursery() as nursery:
        while not control.ended:
            line = await read_line()
            if line is None:
                break
            if not line.strip():
                continue
            history.append(Message(role="user", content=line))
            turn += 2
            with trio.CancelScope() as control.response:
                try:
                    await respond(agent, _ConsoleResponse(config, history, turn, write, nursery))
                finally:
                    control.response = None
                    repair_history(history)
        nursery.cancel_scope.cancel()
    return history


async def chat_loop(config: Config, plugins: Plugins) -> None:
    # A typed conversation texts nobody: its bookings and messages are not real, and
    # anything queued here would go out (to the shop's dispatcher) at the next serve.
    config = msgspec.structs.replace(config, notifications={})
    runtime = Runtime(
        config,
        plugins,
        providers={"telephony": ScriptedTelephony(), "stt": ScriptedSTT(), "tts": ScriptedTTS()},
    )
    await chat(runtime)


OFFLINE_KEY_ENV = "HOOKLINE_OFFLINE_LLM_KEY"  # set in this process only, for the fake

# `chat --offline`: an async context manager yielding the base URL of a loopback
# OpenAI-compatible server, with its key put in OFFLINE_KEY_ENV. The core ships none (it
# must not depend on the test kit): hookline-testkit sets it on the `chat` parser.
OfflineLLM = Callable[[], AbstractAsyncContextManager[str]]


def use_base_url(config: Config, url: str, *, api_key_env: str | None = None) -> None:
    """Point the configured `[llm.openai]` at `url` (an OpenAI-compatible server). The
    OpenAI plugin asks for a key only when the URL is OpenAI's own."""
    if config.providers.llm != "openai":
        raise ConfigError(
            f'--base-url/--offline need [providers] llm = "openai" '
            f"(this config uses {config.providers.llm!r})",
            file=config.path or None,
            key="providers.llm",
        )
    section = {**(config.llm.get("openai") or {}), "base_url": url}
    if api_key_env is not None:
        section["api_key_env"] = api_key_env
    config.llm["openai"] = section

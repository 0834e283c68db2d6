"""Run one tool call: validate arguments, bound its time, turn every failure into a result.

The LLM always gets a result back (`{"error": ...}` on failure) so the conversation goes
on; only the engine decides whether a tool is shielded from barge-in (side effects).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import msgspec
import trio

from ..providers import ToolCallRequest
from ..tools import Tool, ToolContext, ToolError

__all__ = ["ToolOutcome", "run_tool"]

log = logging.getLogger("hookline.tools")
_encode = msgspec.json.Encoder().encode


@dataclass
class ToolOutcome:
    ok: bool
    result: str  # JSON text handed back to the LLM
    error: str | None
    latency_ms: float


def _error(message: str) -> str:
    return _encode({"error": message}).decode()


async def run_tool(
    tool: Tool | None, request: ToolCallRequest, ctx: ToolContext, default_timeout: float
) -> ToolOutcome:
    start = trio.current_time()

    def done(ok: bool, result: str, error: str | None) -> ToolOutcome:
        return ToolOutcome(ok, result, error, (trio.current_time() - start) * 1000.0)

    if tool is None:
        return done(False, _error(f"unknown tool {request.name!r}"), "unknown_tool")
    try:
        params = tool.decode(request.arguments)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        return done(False, _error(f"invalid arguments: {e}"), f"invalid_arguments: {e}")
    timeout = tool.timeout if tool.timeout is not None else default_timeout
    try:
        with trio.fail_after(timeout):
            value = await tool.handler(params, ctx)
    except trio.TooSlowError:
        ctx.logger.warning("tool %s timed out after %.1f s", tool.name, timeout)
        return done(False, _error(f"the {tool.name} tool timed out"), "timeout")
    except ToolError as e:
        return done(False, _error(str(e)), f"tool_error: {e}")
    except Exception as e:
        ctx.logger.exception("tool %s raised", tool.name)
        return done(
            False, _error(f"the {tool.name} tool failed unexpectedly"), f"{type(e).__name__}: {e}"
        )
    try:
        encoded = _encode(value).decode() if not isinstance(value, str) else value
    except (TypeError, msgspec.EncodeError) as e:
        return done(False, _error("the tool returned something unreadable"), f"encode: {e}")
    return done(True, encoded, None)

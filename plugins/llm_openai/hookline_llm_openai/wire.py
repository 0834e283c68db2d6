"""What goes over the wire: hookline messages and tools as a chat completions request, and
the streamed chunks decoded with msgspec (typed, never `json.loads` into dicts).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import msgspec

from hookline import Message, ToolSchema

__all__ = ["Chunk", "SSEParser", "decode_chunk", "wire_message", "wire_tool"]


# --------------------------------------------------------------------------- request


def wire_message(m: Message) -> dict[str, Any]:
    """One hookline Message as the API wants it (hookline's shape is OpenAI's already,
    except that tool calls are flat)."""
    out: dict[str, Any] = {"role": m.role}
    if m.role == "assistant" and m.tool_calls:
        out["content"] = m.content  # null is allowed beside tool calls
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
    else:
        out["content"] = m.content or ""
    if m.role == "tool":
        if not m.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        out["tool_call_id"] = m.tool_call_id
    elif m.name:
        out["name"] = m.name
    return out


def wire_tool(t: ToolSchema) -> dict[str, Any]:
    """A tool as a function definition; strict when hookline says the schema allows it and
    every nested object does too (strict mode rejects optional or open properties)."""
    strict = t.strict and _all_closed(t.parameters)
    params = _closed(t.parameters) if strict else t.parameters
    fn: dict[str, Any] = {"name": t.name, "description": t.description, "parameters": params}
    if strict:
        fn["strict"] = True
    return {"type": "function", "function": fn}


def _is_object(node: dict[str, Any]) -> bool:
    return node.get("type") == "object" or "properties" in node


def _all_closed(node: Any) -> bool:
    """Every object in the schema lists all its properties as required."""
    if isinstance(node, dict):
        if _is_object(node):
            props = node.get("properties", {})
            if set(node.get("required", [])) != set(props):
                return False
            if node.get("additionalProperties") not in (None, False):
                return False
        return all(_all_closed(v) for v in node.values())
    if isinstance(node, list):
        return all(_all_closed(v) for v in node)
    return True


def _closed(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy with `additionalProperties: false` on every object (strict mode needs it)."""
    out = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if _is_object(node):
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(out)
    return out


def wire_tools(tools: Sequence[ToolSchema]) -> list[dict[str, Any]]:
    return [wire_tool(t) for t in tools]


# --------------------------------------------------------------------------- response


class FunctionDelta(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(msgspec.Struct):
    index: int
    id: str | None = None
    type: str | None = None
    function: FunctionDelta | None = None


class Delta(msgspec.Struct):
    role: str | None = None
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class Choice(msgspec.Struct):
    delta: Delta
    index: int = 0
    finish_reason: str | None = None


class PromptTokensDetails(msgspec.Struct):
    cached_tokens: int | None = None


class ChunkUsage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | None = None


class ErrorBody(msgspec.Struct):
    message: str | None = None
    type: str | None = None
    code: str | int | None = None


class Chunk(msgspec.Struct):
    """One `chat.completion.chunk`, or the error object a server sends mid-stream."""

    choices: list[Choice] = []
    usage: ChunkUsage | None = None
    error: ErrorBody | None = None


decode_chunk = msgspec.json.Decoder(Chunk).decode


class SSEParser:
    """Splits a byte stream into server-sent events and returns their `data` payloads.

    OpenAI sends only `data:` lines, but comments (`:`) and other fields are legal SSE and
    are skipped; several `data:` lines in one event are joined with newlines.
    """

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._buf + chunk if self._buf else chunk
        events: list[bytes] = []
        pos = 0
        # One pass with an index: a read holding hundreds of events is not re-copied
        # once per line.
        while (nl := buf.find(b"\n", pos)) >= 0:
            line = buf[pos:nl]
            pos = nl + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if self._data:
                    events.append(b"\n".join(self._data))
                    self._data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)
        self._buf = buf[pos:]
        return events

    def close(self) -> list[bytes]:
        """Whatever event was still open when the body ended."""
        events = self.feed(b"\n\n") if self._buf or self._data else []
        return events

"""Tools the LLM can call.

A tool is a name, a description for the LLM, a msgspec Struct for its parameters (the
JSON schema the LLM sees is derived from it), an async handler `(params, ctx) -> result`,
and whether it has side effects. Write one with the `tool` decorator:

    class TowRequest(msgspec.Struct):
        location: str
        vehicle: str

    @tool(side_effect=True)
    async def request_tow(params: TowRequest, ctx: ToolContext) -> dict:
        "Dispatch a tow truck to the caller."
        ...

The result may be anything msgspec can encode to JSON; it goes back to the LLM as text.
Raise `ToolError("what to tell the caller")` for an expected failure.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, get_type_hints

import msgspec

from .errors import PluginError
from .providers import CallInfo, ToolSchema

if TYPE_CHECKING:
    from .config import Config
    from .context import ProviderContext

__all__ = ["CallControl", "Tool", "ToolContext", "ToolError", "ToolSet", "tool"]


class ToolError(Exception):
    """An expected tool failure; its message goes to the LLM as the error to voice."""


class CallControl(Protocol):
    """What a tool may do to the live call (used by the built-in end_call/transfer_call)."""

    async def end_call(self, goodbye: str | None) -> None:
        """Say `goodbye` (or the configured one), wait until it was heard, hang up."""
        ...

    async def transfer(self, number: str, announcement: str | None) -> None:
        """Say `announcement` if given, then hand the caller to `number`."""
        ...


@dataclass
class ToolContext:
    """Handed to every tool call: which call it serves, and how to act on it."""

    call: CallInfo
    control: CallControl
    logger: logging.LoggerAdapter
    turn: int = 0
    # The id of this tool call as the LLM gave it: stable across retries of one
    # request, so a side-effect tool can use it for idempotency.
    tool_call_id: str = ""


Handler = Callable[[Any, ToolContext], Awaitable[Any]]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    params: type[msgspec.Struct]
    handler: Handler
    side_effect: bool = False
    timeout: float | None = None  # seconds; None takes the engine's default
    # A call slower than [policy] filler_after_s gets a cached filler phrase ("one
    # moment..."); off for tools that speak themselves, like end_call.
    filler: bool = True

    def schema(self) -> ToolSchema:
        parameters = _inline_schema(self.params)
        return ToolSchema(
            name=self.name,
            description=self.description,
            parameters=parameters,
            strict=_strict_compatible(self.params, parameters),
        )

    def decode(self, arguments: str) -> msgspec.Struct:
        """Parse the LLM's JSON arguments; raises msgspec.ValidationError/DecodeError."""
        return msgspec.json.decode(arguments or "{}", type=self.params)


def tool(
    fn: Handler | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    side_effect: bool = False,
    timeout: float | None = None,
    filler: bool = True,
) -> Any:
    """Make a `Tool` from an async handler whose first parameter is annotated with its Struct.

    The description defaults to the handler's docstring.
    """

    def build(handler: Handler) -> Tool:
        if not inspect.iscoroutinefunction(handler):
            raise PluginError(f"tool {handler.__qualname__} must be an async function")
        hints = get_type_hints(handler)
        first = next(iter(inspect.signature(handler).parameters), None)
        params = hints.get(first) if first else None
        if not (isinstance(params, type) and issubclass(params, msgspec.Struct)):
            raise PluginError(
                f"tool {handler.__qualname__}: annotate its first parameter with a msgspec Struct"
            )
        desc = description or inspect.getdoc(handler)
        if not desc:
            raise PluginError(f"tool {handler.__qualname__} needs a description or docstring")
        return Tool(
            name=name or handler.__name__,
            description=desc,
            params=params,
            handler=handler,
            side_effect=side_effect,
            timeout=timeout,
            filler=filler,
        )

    return build(fn) if fn is not None else build


@dataclass(frozen=True)
class ToolSet:
    """A group of tools a plugin offers under one name (what `[providers] tools` lists).

    `settings` is the Struct its `[tools.<name>]` section decodes into (None: the set
    takes no settings); `create(settings, ctx)` builds the tools from those settings and
    a `ProviderContext`, once per process. What the tools share and must release at
    shutdown (a database connection, an HTTP client) is handed to `ctx.on_close`.
    `check(settings, config)`, if given, runs when the config is resolved (by `hookline
    check` and at start-up) to check what the settings alone cannot, such as a file they
    name; it raises ConfigError.
    """

    name: str
    create: Callable[[Any, ProviderContext], Sequence[Tool]]
    settings: type[msgspec.Struct] | None = None
    description: str = ""
    tool_names: tuple[str, ...] = field(default=())
    check: Callable[[Any, Config], None] | None = None


def _inline_schema(params: type[msgspec.Struct]) -> dict[str, Any]:
    """msgspec's JSON schema with `$ref`s resolved inline: LLM tool schemas want one object."""
    (ref,), components = msgspec.json.schema_components([params], ref_template="#/$defs/{name}")
    defs = components

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[1]])
            return {k: resolve(v) for k, v in node.items() if k != "title"}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    schema = resolve(ref)
    schema.setdefault("properties", {})
    return schema


def _strict_compatible(params: type[msgspec.Struct], schema: dict[str, Any]) -> bool:
    """OpenAI strict mode needs every property required and no open objects."""
    props = schema.get("properties", {})
    return set(schema.get("required", [])) == set(props) and not any(
        isinstance(p, dict) and p.get("type") == "object" for p in props.values()
    )

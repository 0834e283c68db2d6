"""What every tool set must offer the LLM (see `hookline.testing.conformance`)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import pytest

from ...logs import call_log
from ...tools import Tool, ToolContext, ToolError, ToolSet
from ..scripted import call_info

__all__ = ["ToolSetConformance"]

# What LLM APIs accept as a function name (OpenAI: ^[a-zA-Z0-9_-]{1,64}$).
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_JSON_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}


class _NoCallControl:
    """The live call, for tools that act on it: the suite only records what they asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def end_call(self, goodbye: str | None) -> None:
        self.asked.append("end_call")

    async def transfer(self, number: str, announcement: str | None) -> None:
        self.asked.append("transfer")


def _check_schema(node: Any, where: str) -> None:
    """A JSON schema as LLM tool calling takes it: typed nodes, required ⊆ properties."""
    assert isinstance(node, dict), f"{where}: a schema node must be an object"
    kinds = node.get("type")
    options = node.get("anyOf") or node.get("oneOf")
    if options is not None:
        for i, option in enumerate(options):
            _check_schema(option, f"{where}.anyOf[{i}]")
        return
    if "enum" in node or "const" in node:
        return
    kinds = kinds if isinstance(kinds, list) else [kinds]
    assert kinds and set(kinds) <= _JSON_TYPES, f"{where}: unknown type {node.get('type')!r}"
    if "object" in kinds:
        props = node.get("properties", {})
        assert isinstance(props, dict), f"{where}: properties must be an object"
        required = node.get("required", [])
        assert set(required) <= set(props), f"{where}: required names unknown properties"
        for name, prop in props.items():
            _check_schema(prop, f"{where}.{name}")
    if "array" in kinds and "items" in node:
        _check_schema(node["items"], f"{where}[]")


class ToolSetConformance:
    """Fixtures to provide:

    - `toolset`: the `ToolSet` as the plugin's `hookline_toolsets` returns it;
    - `tools`: the tools it built for the test's settings (with any fakes it talks to);
    - `tool_args`: for every tool, valid JSON arguments as an LLM would send them;
    - `side_effect_tools`: the names of the tools that change something outside the call
      (book, cancel, send, dispatch): these must be declared `side_effect=True`.

    Optional: `refused_tool_args`, tool name -> JSON arguments that decode but that the
    tool must refuse with a `ToolError` (a date in the past, an empty location...).
    """

    @pytest.fixture
    def refused_tool_args(self) -> Mapping[str, Sequence[str]]:
        return {}

    async def test_is_a_tool_set_of_tools(self, toolset: Any, tools: Sequence[Any]) -> None:
        assert isinstance(toolset, ToolSet) and _NAME.match(toolset.name)
        assert tools, "a tool set offers at least one tool"
        assert all(isinstance(t, Tool) for t in tools)
        names = [t.name for t in tools]
        assert len(set(names)) == len(names), f"duplicate tool names: {names}"
        if toolset.tool_names:  # what `hookline plugins` lists must be what it builds
            assert set(names) <= set(toolset.tool_names)

    async def test_names_and_descriptions(self, tools: Sequence[Tool]) -> None:
        for t in tools:
            assert _NAME.match(t.name), f"{t.name!r} is not a name LLM APIs accept"
            assert t.description.strip(), f"{t.name} has no description"
            assert len(t.description) <= 1024, f"{t.name}: the description is too long"

    async def test_schemas_are_valid_json_schema(self, tools: Sequence[Tool]) -> None:
        for t in tools:
            schema = t.schema()
            assert schema.name == t.name and schema.description == t.description
            params = msgspec.json.decode(msgspec.json.encode(schema.parameters))
            assert params.get("type") == "object", f"{t.name}: parameters must be an object"
            _check_schema(params, t.name)
            for name, prop in params.get("properties", {}).items():
                assert prop.get("description") or prop.get("enum"), (
                    f"{t.name}.{name}: describe the parameter for the LLM"
                )

    async def test_valid_arguments_decode(
        self, tools: Sequence[Tool], tool_args: Mapping[str, str]
    ) -> None:
        missing = {t.name for t in tools} - set(tool_args)
        assert not missing, f"give valid arguments for every tool; missing: {sorted(missing)}"
        for t in tools:
            params = t.decode(tool_args[t.name])
            assert isinstance(params, t.params)

    async def test_invalid_arguments_are_a_clear_error(self, tools: Sequence[Tool]) -> None:
        for t in tools:
            for bad in ("[1, 2]", '"text"', "{not json"):
                with pytest.raises(msgspec.DecodeError) as info:
                    t.decode(bad)
                assert str(info.value) and "\n" not in str(info.value)
            props = t.schema().parameters.get("properties", {})
            for name, prop in props.items():
                if _accepts_object(prop):
                    continue
                with pytest.raises(msgspec.ValidationError, match=re.escape(f"$.{name}")):
                    t.decode(msgspec.json.encode({name: {"unexpected": "object"}}).decode())

    async def test_refused_arguments_raise_tool_error(
        self, tools: Sequence[Tool], refused_tool_args: Mapping[str, Sequence[str]]
    ) -> None:
        by_name = {t.name: t for t in tools}
        for name, cases in refused_tool_args.items():
            for arguments in cases:
                ctx = ToolContext(
                    call=call_info(),
                    control=_NoCallControl(),
                    logger=call_log("hookline.tools", "conformance"),
                    tool_call_id="call_conformance",
                )
                with pytest.raises(ToolError) as info:
                    await by_name[name].handler(by_name[name].decode(arguments), ctx)
                assert str(info.value).strip(), f"{name}: a ToolError says what went wrong"

    async def test_side_effect_tools_are_declared(
        self, tools: Sequence[Tool], side_effect_tools: set[str]
    ) -> None:
        assert side_effect_tools <= {t.name for t in tools}, "unknown tool names"
        declared = {t.name for t in tools if t.side_effect}
        assert declared == set(side_effect_tools)


def _accepts_object(prop: dict[str, Any]) -> bool:
    options = prop.get("anyOf") or [prop]
    return any(
        o.get("type") == "object" or "object" in (o.get("type") or []) or not o for o in options
    )

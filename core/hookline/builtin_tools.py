"""Built-in tools every agent can use: end the call, hand the caller to a person.

Enabled by listing "builtin" in `[providers] tools`. `transfer_call` is offered only when
`[agent] transfer_number` is set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import msgspec

from .context import ProviderContext
from .hookspecs import hookimpl
from .tools import Tool, ToolContext, ToolSet, tool


class EndCall(msgspec.Struct, forbid_unknown_fields=True):
    goodbye: Annotated[
        str | None,
        msgspec.Meta(description="A short goodbye to say before hanging up; omit for the default"),
    ] = None


class TransferCall(msgspec.Struct, forbid_unknown_fields=True):
    reason: Annotated[
        str, msgspec.Meta(description="Why the caller wants a person, in a few words")
    ]


@tool(side_effect=True, timeout=60, filler=False)
async def end_call(params: EndCall, ctx: ToolContext) -> dict[str, Any]:
    """End the phone call: says goodbye, waits until the caller heard it, then hangs up.
    Use it when the caller is done or asks to hang up."""
    await ctx.control.end_call(params.goodbye)
    return {"ok": True}


def _transfer_tool(number: str, announcement: str) -> Tool:
    @tool(side_effect=True, timeout=60, filler=False)
    async def transfer_call(params: TransferCall, ctx: ToolContext) -> dict[str, Any]:
        """Hand the caller to a person at the shop. Use it when the caller asks for a human,
        or for anything you cannot handle."""
        ctx.logger.info("transfer requested: %s", params.reason)
        await ctx.control.transfer(number, announcement)
        return {"ok": True, "transferred": True}

    return transfer_call


def _create(settings: None, ctx: ProviderContext) -> Sequence[Tool]:
    agent = ctx.agent
    tools = [end_call]
    if agent.transfer_number:
        tools.append(_transfer_tool(agent.transfer_number, agent.transfer_announcement))
    return tools


@hookimpl
def hookline_toolsets() -> list[ToolSet]:
    return [
        ToolSet(
            name="builtin",
            create=_create,
            description="end_call, transfer_call (with [agent] transfer_number)",
            tool_names=("end_call", "transfer_call"),
        )
    ]

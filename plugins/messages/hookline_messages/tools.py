"""The `take_message` tool: a promised call-back, written down before the agent says so."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import msgspec

from hookline import ProviderError, Tool, ToolContext, ToolError

from .store import Message, MessageStore, Urgency, message_id

__all__ = ["Notify", "TakeMessage", "build_tools", "match_urgency", "normalize_number"]

URGENCIES: tuple[Urgency, ...] = ("routine", "urgent")
# Words a model or a caller uses for each level; matched after lower-casing.
_URGENT = {"urgent", "emergency", "asap", "high", "critical", "important", "immediately", "now"}
_ROUTINE = {"routine", "normal", "low", "regular", "standard", "whenever", "not urgent", "no"}
UNREACHABLE = (
    "I couldn't save the message just now. Please call back a little later, or try the "
    "shop's main line."
)


class TakeMessage(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Annotated[str, msgspec.Meta(description="The caller's name, as they gave it.")]
    reason: Annotated[
        str,
        msgspec.Meta(description="What the call-back is about, in a sentence or two."),
    ]
    callback_number: Annotated[
        str | None,
        msgspec.Meta(
            description="A number to call back on, only if the caller gives one; leave out "
            "to use the number they are calling from."
        ),
    ] = None
    # A string in the schema's enum: the model is shown the two values, and whatever
    # wording it sends is matched here, so "Urgent!" or "high" is no decode error.
    urgency: Annotated[
        str,
        msgspec.Meta(
            description="routine, or urgent when the caller needs a call back soon.",
            extra_json_schema={"enum": list(URGENCIES)},
        ),
    ] = "routine"


def match_urgency(text: str) -> Urgency | None:
    words = " ".join(re.sub(r"[^a-z]+", " ", text.lower()).split())
    if not words or words in _ROUTINE:
        return "routine"
    if words in _URGENT or (any(w in _URGENT for w in words.split()) and "not" not in words):
        return "urgent"
    if words.startswith("not ") or words in ("low priority", "no rush"):
        return "routine"
    return None


def normalize_number(text: str) -> str:
    """'(312) 555-0100' -> '+13125550100'; '' when there are no digits."""
    text = text.strip()
    digits = re.sub(r"\D", "", text)
    if not digits:
        return ""
    if text.startswith("+"):
        return "+" + digits
    if digits.startswith("00"):
        return "+" + digits[2:]
    if len(digits) == 10:
        return "+1" + digits
    if len(digits) == 11 and digits.startswith("1"):
        return "+" + digits
    return digits


def _callback(given: str | None, ctx: ToolContext) -> str:
    if given and given.strip():
        number = normalize_number(given)
        digits = len(number.lstrip("+"))
        if not 7 <= digits <= 15:
            raise ToolError(
                f"{given!r} doesn't look like a complete phone number. Please ask for the "
                "number again, with the area code."
            )
        return number
    number = normalize_number(ctx.call.from_number or "")
    if not 7 <= len(number.lstrip("+")) <= 15:
        raise ToolError(
            "I can't see the number this call comes from. Please ask the caller for the "
            "best number to call them back on, with the area code."
        )
    return number


# Tells the shop about a stored message (enqueues; never raises for a delivery problem).
Notify = Callable[[Message, ToolContext], Awaitable[None]]


def build_tools(store: MessageStore, notify: Notify | None = None) -> list[Tool]:
    async def take_message(params: Any, ctx: ToolContext) -> dict[str, Any]:
        name, reason = params.name.strip(), params.reason.strip()
        if not name:
            raise ToolError("I need the caller's name for the message. Please ask for it.")
        if not reason:
            raise ToolError(
                "The message needs a reason: ask the caller what the call-back is about."
            )
        urgency = match_urgency(params.urgency)
        if urgency is None:
            raise ToolError(
                f"Urgency {params.urgency!r} isn't one I know: use 'routine', or 'urgent' "
                "when the caller needs a call back soon."
            )
        wanted = Message(
            id=message_id(ctx.call.call_id, ctx.tool_call_id),
            created=dt.datetime.now(dt.UTC),
            name=name,
            callback_number=_callback(params.callback_number, ctx),
            reason=reason,
            urgency=urgency,
            call_id=ctx.call.call_id,
            tool_call_id=ctx.tool_call_id,
        )
        try:
            stored, new = await store.add(wanted)
        except ProviderError as e:
            ctx.logger.warning("message not stored: %s", e)
            raise ToolError(UNREACHABLE) from e
        ctx.logger.info("message %s %s (%s)", stored.id, "taken" if new else "found", urgency)
        if notify is not None:
            await notify(stored, ctx)
        return {
            "taken": True,
            "message_id": stored.id,
            "callback_number": stored.callback_number,
            "urgency": stored.urgency,
            "message": (
                f"Message taken for {stored.name}: the shop will call back at "
                f"{stored.callback_number}"
                + (" as soon as possible." if stored.urgency == "urgent" else ".")
            ),
        }

    return [
        Tool(
            "take_message",
            "Take a message for the shop when the caller wants a call back or nobody can "
            "help them now: their name, the reason, how urgent it is and, only if they give "
            "one, another number to call back on. Read the number back before saying the "
            "message is taken.",
            TakeMessage,
            take_message,
            side_effect=True,
        )
    ]

"""The `answer_question` tool: what the model gets back for a caller's question."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from hookline import Tool, ToolContext, ToolError, tool

from .sections import Section
from .settings import KnowledgeSettings
from .webhook import WebhookError, WebhookKnowledge

if TYPE_CHECKING:
    from .retrieval import KnowledgeIndex

__all__ = ["Question", "file_tool", "webhook_tool"]

DESCRIPTION = (
    "Look up the shop's own information to answer a caller's question about it: loaner "
    "cars, shuttle, warranty, payment and financing, prices, diagnostic fee, directions "
    "and parking, tire storage, drop-off and pick-up, which vehicles we service, policies. "
    "Use it before answering any such question; never guess a price or policy."
)
UNKNOWN = (
    "The shop's information does not cover this. Tell the caller you don't have that "
    "information, and offer to take a message so someone from the shop calls them back."
)
ANSWER_ONLY_FROM = (
    "Answer from this text only, briefly and in spoken style. If it does not answer the "
    "question, say you don't have that information and offer to take a message."
)
UNAVAILABLE = (
    "The shop's information cannot be looked up right now. Tell the caller, and offer to "
    "take a message so someone from the shop calls them back."
)


class Question(msgspec.Struct, forbid_unknown_fields=True):
    question: Annotated[
        str,
        msgspec.Meta(
            description="The caller's question in a few words, e.g. 'do you take Amex'",
            max_length=500,
        ),
    ]


def _clip(text: str, limit: int) -> str:
    """At most `limit` characters, cut at a word boundary."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(None, 1)[0]
    return cut + "…"


def _topics(found: list[tuple[Section, float]], max_chars: int) -> list[dict[str, str]]:
    """The best topics, in order, within `max_chars` in all (the first one clipped)."""
    out: list[dict[str, str]] = []
    left = max_chars
    for section, _ in found:
        if left <= 0 or (out and len(section.text) > left):
            break
        text = _clip(section.text, left)
        out.append({"topic": section.title, "text": text})
        left -= len(text)
    return out


def file_tool(index: KnowledgeIndex, settings: KnowledgeSettings) -> Tool:
    @tool(name="answer_question", description=DESCRIPTION)
    async def answer_question(params: Question, ctx: ToolContext) -> dict[str, Any]:
        if not params.question.strip():
            raise ToolError("Say what the caller wants to know as the question")
        found = index.search(
            params.question,
            limit=settings.max_sections,
            min_score=settings.min_score,
            min_coverage=settings.min_coverage,
        )
        # The question stays out of the log (a caller may say a name in it); the topics do.
        ctx.logger.info(
            "knowledge lookup -> %s",
            ", ".join(f"{s.title} ({score:.2f})" for s, score in found) or "nothing",
        )
        if not found:
            return {"found": False, "instructions": UNKNOWN}
        topics = _topics(found, settings.max_chars)
        return {"found": True, "topics": topics, "instructions": ANSWER_ONLY_FROM}

    return answer_question


def webhook_tool(webhook: WebhookKnowledge, settings: KnowledgeSettings) -> Tool:
    # The engine's own bound sits above the webhook's, so the clear error wins the race.
    @tool(name="answer_question", description=DESCRIPTION, timeout=settings.timeout_s + 2.0)
    async def answer_question(params: Question, ctx: ToolContext) -> dict[str, Any]:
        if not params.question.strip():
            raise ToolError("Say what the caller wants to know as the question")
        try:
            answer = await webhook.ask(params.question, ctx.call.call_id)
        except WebhookError as e:
            ctx.logger.warning("knowledge webhook failed: %s", e)
            raise ToolError(UNAVAILABLE) from None
        ctx.logger.info("knowledge webhook -> %s", "an answer" if answer else "no answer")
        if answer is None:
            return {"found": False, "instructions": UNKNOWN}
        return {"found": True, "answer": answer, "instructions": ANSWER_ONLY_FROM}

    return answer_question

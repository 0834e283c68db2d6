"""Keeping the history sent to the model within a token budget.

The leading system messages (the prompt) are always kept. The rest is dropped from the
oldest end, whole turns at a time: a kept history starts at a user message, and never at
a point that would separate an assistant message's tool calls from their results (the
API rejects a `tool` message whose call it cannot see). When even the latest turn is over
the budget it is kept whole: the model must see what it is answering.

Tokens are estimated as characters / 4 plus a small per-message overhead: cheap, good
enough for a budget, and free of a tokenizer dependency.
"""

from __future__ import annotations

from collections.abc import Sequence

from hookline import Message

__all__ = ["cut_points", "estimate_tokens", "trim_history"]

_PER_MESSAGE = 4  # role and framing tokens, roughly what OpenAI counts per message


def estimate_tokens(message: Message) -> int:
    chars = len(message.content or "") + len(message.name or "")
    for call in message.tool_calls:
        chars += len(call.id) + len(call.name) + len(call.arguments)
    return _PER_MESSAGE + (chars + 3) // 4


def cut_points(history: Sequence[Message]) -> list[int]:
    """Indices where a kept suffix of `history` (no system prompt) may start, ascending.

    0 always; otherwise a user message that no later tool result reaches back across.
    """
    owner: dict[str, int] = {}
    for i, m in enumerate(history):
        for call in m.tool_calls:
            owner[call.id] = i
    # blocked[i]: some tool result at or after i answers a call made before i.
    reach = [0] * (len(history) + 1)
    for j, m in enumerate(history):
        k = owner.get(m.tool_call_id or "") if m.role == "tool" else None
        if k is not None and k < j:
            reach[k + 1] += 1
            reach[j + 1] -= 1
    cuts = [0]
    open_pairs = 0
    for i, m in enumerate(history):
        open_pairs += reach[i]
        if i > 0 and m.role == "user" and open_pairs == 0:
            cuts.append(i)
    return cuts


def trim_history(messages: Sequence[Message], budget: int) -> list[Message]:
    """The longest suffix of whole turns that fits `budget` tokens, after the system prompt."""
    head = 0
    while head < len(messages) and messages[head].role == "system":
        head += 1
    system, rest = list(messages[:head]), list(messages[head:])
    left = budget - sum(estimate_tokens(m) for m in system)
    suffix = [0] * (len(rest) + 1)
    for i in range(len(rest) - 1, -1, -1):
        suffix[i] = suffix[i + 1] + estimate_tokens(rest[i])
    cuts = cut_points(rest)
    for c in cuts:
        if suffix[c] <= left:
            return system + rest[c:]
    return system + rest[cuts[-1] :]

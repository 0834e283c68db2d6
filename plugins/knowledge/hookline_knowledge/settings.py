"""`[tools.knowledge]`: where the answers come from and how much of them the model sees."""

from __future__ import annotations

from typing import Annotated

import msgspec

from hookline import PositiveInt, Seconds

__all__ = ["KnowledgeSettings"]


class KnowledgeSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Answers from a Markdown knowledge file, or from the shop's own webhook.

    Exactly one of:
    - `file`: a Markdown file (relative to the config file) split into topics by its
      headings; a question gets the `max_sections` most relevant topics (BM25 over the
      heading and text, English stemming), at most `max_chars` characters in all, and
      only topics that fit (`min_score`, `min_coverage`): with none, the tool says it
      does not know and the agent offers to take a message.
    - `webhook_url`: the question is POSTed as JSON `{"question", "call_id"}`, signed with
      HMAC-SHA256 using the secret in the environment variable `webhook_secret_env`
      (headers `X-Hookline-Timestamp` and `X-Hookline-Signature: sha256=<hex of
      HMAC(secret, timestamp + "." + body)>`); the shop answers `{"answer": "..."}`, or
      `{"answer": null}` when it does not know. Bounded by `timeout_s`.
    """

    file: str = ""
    max_sections: Annotated[int, msgspec.Meta(ge=1, le=3)] = 2
    max_chars: Annotated[int, msgspec.Meta(ge=200, le=8000)] = 1500
    # A topic answers when its BM25 score reaches `min_score` and it contains at least
    # `min_coverage` of the question's words (after dropping "can you tell me"-style
    # words). Raise them if callers get topics that do not fit; lower them if the
    # agent says "I don't know" to questions the file covers in other words.
    min_score: Annotated[float, msgspec.Meta(ge=0, le=100)] = 0.5
    min_coverage: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.5

    webhook_url: str = ""
    webhook_secret_env: str = "KNOWLEDGE_WEBHOOK_SECRET"
    timeout_s: Seconds = 4.0
    max_answer_chars: PositiveInt = 1500

    def __post_init__(self) -> None:
        if bool(self.file.strip()) == bool(self.webhook_url.strip()):
            raise ValueError(
                "set exactly one of 'file' (a Markdown knowledge file) or 'webhook_url'"
            )
        if self.webhook_url:
            if not self.webhook_url.startswith(("https://", "http://")):
                raise ValueError(f"webhook_url: {self.webhook_url!r} is not an http(s) URL")
            if not self.webhook_secret_env:
                raise ValueError("webhook_secret_env: name the variable holding the secret")
        else:
            # The file needs no secret, so `hookline check` must not ask for one.
            self.webhook_secret_env = ""

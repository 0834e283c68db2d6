"""Answers to callers' questions about the shop, for hookline.

Enable with `[providers] tools = [..., "knowledge"]` and point `[tools.knowledge]` at a
Markdown knowledge file (`file = "knowledge/automotive.md"`, relative to the config) or
at the shop's webhook (`webhook_url`, see `KnowledgeSettings`). The tool set offers one
tool, `answer_question`: the model passes the caller's question and gets back the one to
three topics of the file that answer it (never the whole file), or the shop's answer, or
"not covered: offer to take a message".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from hookline import ConfigError, ToolSet, hookimpl
from hookline.tools import Tool

from .answers import file_tool, webhook_tool
from .sections import KnowledgeFileError, Section, read_sections
from .settings import KnowledgeSettings
from .webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookKnowledge, sign

if TYPE_CHECKING:
    from pathlib import Path

    from hookline.config import Config
    from hookline.runtime import Runtime

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "KnowledgeSettings",
    "WebhookKnowledge",
    "hookline_toolsets",
    "load_sections",
    "sign",
]

TOOL_NAMES = ("answer_question",)


def load_sections(path: Path, *, config_file: str | None) -> list[Section]:
    """The knowledge file's topics, or a one-line ConfigError naming the key."""
    try:
        return read_sections(path)
    except KnowledgeFileError as e:
        raise ConfigError(str(e), file=config_file, key="tools.knowledge.file") from None


def _check(settings: KnowledgeSettings, config: Config) -> None:
    """`hookline check`: the knowledge file exists and is Markdown text with topics."""
    if settings.file:
        load_sections(config.resolve_path(settings.file), config_file=config.path or None)


def _create(settings: KnowledgeSettings, runtime: Runtime) -> Sequence[Tool]:
    # Everything this tool set reads from the runtime is read here: the config file's
    # place (for the knowledge file) and the webhook's secret.
    config = runtime.config
    if settings.file:
        sections = load_sections(config.resolve_path(settings.file), config_file=config.path)
        # Imported here: bm25s brings numpy, half a second that `hookline plugins` and
        # every other command need not pay.
        from .retrieval import KnowledgeIndex

        return [file_tool(KnowledgeIndex(sections), settings)]  # indexed once, here
    secret = runtime.secret(settings.webhook_secret_env, key="tools.knowledge.webhook_secret_env")
    webhook = WebhookKnowledge(
        settings.webhook_url,
        secret,
        timeout_s=settings.timeout_s,
        max_chars=settings.max_answer_chars,
    )
    return [webhook_tool(webhook, settings)]


@hookimpl
def hookline_toolsets() -> list[ToolSet]:
    return [
        ToolSet(
            name="knowledge",
            settings=KnowledgeSettings,
            create=_create,
            check=_check,
            description="Answer callers' questions about the shop from a knowledge file "
            "or the shop's webhook.",
            tool_names=TOOL_NAMES,
        )
    ]

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
from pathlib import Path

from hookline import Config, ConfigError, ProviderContext, Tool, ToolSet, hookimpl

from .answers import file_tool, webhook_tool
from .sections import KnowledgeFileError, Section, read_sections
from .settings import KnowledgeSettings
from .webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookKnowledge, sign

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


def _create(settings: KnowledgeSettings, ctx: ProviderContext) -> Sequence[Tool]:
    if settings.file:
        config_file = str(ctx.config_file) if ctx.config_file else None
        sections = load_sections(ctx.resolve_path(settings.file), config_file=config_file)
        # Imported here: bm25s brings numpy, half a second that `hookline plugins` and
        # every other command need not pay.
        from .retrieval import KnowledgeIndex

        return [file_tool(KnowledgeIndex(sections), settings)]  # indexed once, here
    secret = ctx.secret(settings.webhook_secret_env, key="webhook_secret_env")
    webhook = WebhookKnowledge(
        settings.webhook_url,
        secret,
        timeout_s=settings.timeout_s,
        max_chars=settings.max_answer_chars,
    )
    ctx.on_close(webhook.aclose)
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

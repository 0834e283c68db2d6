"""A knowledge file: Markdown split into topics at its headings."""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["KnowledgeFileError", "Section", "read_sections", "split_sections"]

_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
# Notes for whoever edits the file, never read to a caller.
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
# A knowledge file is prose a person writes; anything near this is a mistake (a PDF).
MAX_FILE_BYTES = 2_000_000


class KnowledgeFileError(Exception):
    """The knowledge file cannot be used; the message is one line saying why."""


@dataclass(frozen=True)
class Section:
    """One topic: its heading (with the headings above it, for context) and its text."""

    title: str
    text: str

    def render(self) -> str:
        return f"{self.title}\n{self.text}" if self.title else self.text


def split_sections(markdown: str) -> list[Section]:
    """Topics at every ATX heading (`#` to `######`), outside fenced code blocks.

    A topic's title is its heading path ("Payment > Financing") so a sub-topic keeps the
    words of its parent, less a lone top-level heading (the document's title, which every
    topic would share). Headings with no text under them give no topic; HTML comments
    (`<!-- notes for editors -->`) are dropped.
    """
    lines = list(_classified(_COMMENT.sub("", markdown)))
    one_title = sum(1 for _, heading in lines if heading and heading[0] == 1) == 1
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    body: list[str] = []

    def close() -> None:
        text = "\n".join(body).strip()
        if text:
            titled = path[1:] if one_title and path and path[0][0] == 1 else path
            sections.append(Section(" > ".join(t for _, t in titled), text))
        body.clear()

    for line, heading in lines:
        if heading is None:
            body.append(line)
            continue
        close()
        while path and path[-1][0] >= heading[0]:
            path.pop()
        path.append(heading)
    close()
    return sections


def _classified(markdown: str) -> Iterator[tuple[str, tuple[int, str] | None]]:
    """Each line, with (level, title) when it is a heading outside a code fence."""
    fence: str | None = None
    for line in markdown.splitlines():
        if m := _FENCE.match(line):
            marker = m.group(1)
            if fence is None:
                fence = marker[0] * 3
            elif marker.startswith(fence):
                fence = None
        elif fence is None and (m := _HEADING.match(line)):
            yield line, (len(m.group(1)), m.group(2).strip())
            continue
        yield line, None


def read_sections(path: Path) -> list[Section]:
    """The topics of a UTF-8 Markdown file; KnowledgeFileError saying why it cannot be."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise KnowledgeFileError(f"{path} is not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise KnowledgeFileError(
                f"{path} is {info.st_size} bytes; a knowledge file is Markdown text "
                f"under {MAX_FILE_BYTES // 1_000_000} MB"
            )
        data = path.read_bytes()
    except FileNotFoundError:
        raise KnowledgeFileError(f"{path}: no such file") from None
    except OSError as e:
        raise KnowledgeFileError(f"{path}: cannot read: {e.strerror or e}") from None
    if b"\x00" in data:
        raise KnowledgeFileError(f"{path} is a binary file, not Markdown text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise KnowledgeFileError(
            f"{path} is not UTF-8 text (byte {e.start} is {data[e.start]:#04x}); save it as UTF-8"
        ) from None
    sections = split_sections(text)
    if not sections:
        raise KnowledgeFileError(f"{path} has no text to answer from")
    return sections

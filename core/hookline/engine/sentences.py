"""Cut streamed LLM text into sentences, so TTS can start on the first one at once."""

from __future__ import annotations

import re

__all__ = ["SentenceChunker"]

# A sentence ends at . ! ? (optionally followed by closing quotes/brackets) and whitespace.
_END = re.compile(r"[.!?…]+[\"')\]]*\s+|\n+")
# Tokens after which a period does not end a sentence.
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr st jr sr vs etc e.g i.e a.m p.m no approx ave blvd rd dept est inc ltd co "
    "mt ft".split()
)
# Past this many characters without a sentence end, cut at the last comma or space so the
# caller is not kept waiting on a long run-on sentence.
_MAX_CHARS = 220


class SentenceChunker:
    """Feed text deltas with `push`; get back complete sentences. `flush` returns the rest."""

    def __init__(self, max_chars: int = _MAX_CHARS) -> None:
        self._buffer = ""
        self._max_chars = max_chars

    def push(self, delta: str) -> list[str]:
        self._buffer += delta
        out: list[str] = []
        start = 0
        for m in _END.finditer(self._buffer):
            candidate = self._buffer[start : m.end()]
            if m.group().strip() == "." and _ends_with_abbreviation(candidate):
                continue
            if sentence := candidate.strip():
                out.append(sentence)
            start = m.end()
        self._buffer = self._buffer[start:]
        while len(self._buffer) > self._max_chars:
            cut = self._buffer.rfind(", ", 0, self._max_chars)
            cut = cut + 1 if cut > 0 else self._buffer.rfind(" ", 0, self._max_chars)
            if cut <= 0:
                break
            out.append(self._buffer[:cut].strip())
            self._buffer = self._buffer[cut:].lstrip()
        return out

    def flush(self) -> str | None:
        rest, self._buffer = self._buffer.strip(), ""
        return rest or None


def _ends_with_abbreviation(text: str) -> bool:
    words = text.rstrip().rstrip(".").split()
    if not words:
        return False
    word = words[-1]
    # "Dr." or "a.m." or an initial like "J." do not end a sentence.
    return word.lower() in _ABBREVIATIONS or (len(word) == 1 and word.isupper())

"""Find the topics of a knowledge file that answer a question: BM25 (bm25s) over stemmed
words, built once at start-up; each question costs one sparse dot product."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import bm25s
import snowballstemmer
from bm25s.stopwords import STOPWORDS_EN_PLUS

from .sections import Section

__all__ = ["KnowledgeIndex"]

# bm25s logs progress at INFO level while indexing; the index is tiny, keep it quiet.
logging.getLogger("bm25s").setLevel(logging.WARNING)

# English stop words, and the words a spoken question is wrapped in ("can you tell me",
# "I need to know"): they say nothing about which topic is meant.
STOP_WORDS = (
    *STOPWORDS_EN_PLUS,
    *"""also anything could get go going got guys hello hey hi know like many much need
    okay ok please really something somewhere tell thank thanks want wonder wondering
    would yeah yes""".split(),
)

# A second or third topic is given only when it scores at least this share of the best.
RUNNER_UP_SHARE = 0.5


class KnowledgeIndex:
    """The sections of one knowledge file, ranked per question.

    Words are lower-cased, stop words dropped and Snowball-stemmed, so "parking" matches
    "park" and "loaners" matches "loaner". A section's heading counts twice: it names the
    topic in the words a caller would use.

    A section answers when its BM25 score reaches `min_score` and it holds at least
    `min_coverage` of the question's words. BM25 alone ranks; it cannot tell "no topic is
    about this" (one shared word like "night" in "who won the game last night" scores as
    high as "loaner" in "can I get a loaner"), the share of the question a topic covers can.
    """

    def __init__(self, sections: Sequence[Section]) -> None:
        if not sections:
            raise ValueError("a knowledge index needs at least one section")
        self.sections = tuple(sections)
        self._stemmer = snowballstemmer.stemmer("english")
        corpus = self._tokens([f"{s.title}\n{s.title}\n{s.text}" for s in self.sections])
        self._words = [frozenset(words) for words in corpus]
        self._bm25 = bm25s.BM25()
        self._bm25.index(corpus, show_progress=False)

    def _tokens(self, texts: list[str]) -> list[list[str]]:
        return bm25s.tokenize(
            texts,
            stopwords=list(STOP_WORDS),
            stemmer=self._stemmer.stemWords,
            return_ids=False,
            show_progress=False,
        )

    def search(
        self, question: str, *, limit: int, min_score: float, min_coverage: float
    ) -> list[tuple[Section, float]]:
        """Up to `limit` sections that answer, best first, with their scores."""
        # bm25s keeps "" in its vocabulary past the end of its index: never ask for it.
        words = [w for w in self._tokens([question])[0] if w]
        asked = set(words)
        if not asked:
            return []
        scores = self._bm25.get_scores(words)
        ranked = sorted(range(len(self.sections)), key=lambda i: scores[i], reverse=True)
        found: list[tuple[Section, float]] = []
        for i in ranked[:limit]:
            score = float(scores[i])
            covered = len(asked & self._words[i]) / len(asked)
            if score < min_score or covered < min_coverage:
                continue
            if found and score < RUNNER_UP_SHARE * found[0][1]:
                break  # far behind the best topic: it shares a word, not the subject
            found.append((self.sections[i], score))
        return found

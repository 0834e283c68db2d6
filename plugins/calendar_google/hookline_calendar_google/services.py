"""Which configured service a caller's (or a model's) wording names.

"Oil Change", "oil changes", "an oil change" and "oil chnage" all name "oil change";
the shop adds its own words in `[tools.calendar_google.service_synonyms]`
("transmission flush" = "fluid service"). Wording that names no service, or more than
one, is a `ToolError` whose sentence lists what the shop offers, so the model can ask.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping

from hookline import ToolError

__all__ = ["ServiceMatcher", "words"]

# Words that do not change which service is meant ("an oil change for my car, please").
_FILLER = frozenset(
    "a an the my our some please just get do need want for to on of i me car truck vehicle "
    "service job appointment".split()
)
# Spelling slips tolerated by the last, fuzzy step (a ratio of difflib's SequenceMatcher).
_CLOSE_ENOUGH = 0.85


def _singular(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def words(text: str, *, keep_filler: bool = False) -> tuple[str, ...]:
    """Lower-cased singular words; filler words dropped unless that leaves nothing."""
    all_words = tuple(_singular(w) for w in re.sub(r"[^a-z0-9]+", " ", text.lower()).split())
    kept = tuple(w for w in all_words if w not in _FILLER)
    return all_words if keep_filler or not kept else kept


class ServiceMatcher:
    """`services`: the configured names; `synonyms`: phrase -> a configured name (or a
    wording of one, e.g. "oil_change")."""

    def __init__(self, services: list[str], synonyms: Mapping[str, str] | None = None) -> None:
        self.services = list(services)
        self._names: dict[tuple[str, ...], str] = {}
        for name in self.services:
            self._names.setdefault(words(name), name)
        for phrase, target in (synonyms or {}).items():
            service = self._exact(target)
            if service is None:
                raise ValueError(
                    f"service_synonyms: {phrase!r} points at {target!r}, which is not one of "
                    f"the services ({', '.join(self.services)})"
                )
            self._names.setdefault(words(phrase), service)

    def offered(self) -> str:
        return "We offer: " + ", ".join(self.services) + "."

    def _exact(self, text: str) -> str | None:
        if text in self.services:
            return text
        return self._names.get(words(text))

    def match(self, text: str) -> str:
        """The configured service `text` names; a ToolError saying what is offered when it
        names none, or asking which one when it names several."""
        found = self._exact(text)
        if found is not None:
            return found
        wanted = words(text)
        if not wanted:
            raise ToolError(f"Which service would you like? {self.offered()}")
        # Every word of a name in the wording, or every word of the wording in a name:
        # "brake job" -> "brakes", "oil" -> "oil change", "state inspection sticker".
        within = {
            service
            for known, service in self._names.items()
            if set(known) <= set(wanted) or set(wanted) <= set(known)
        }
        if len(within) == 1:
            return within.pop()
        if len(within) > 1:
            raise ToolError(
                f"{text!r} could be {_either(sorted(within, key=self.services.index))}; "
                "please ask the caller which one."
            )
        close = difflib.get_close_matches(
            " ".join(wanted), [" ".join(k) for k in self._names], n=2, cutoff=_CLOSE_ENOUGH
        )
        if len(close) == 1 or (
            close and self._names[tuple(close[0].split())] == self._names[tuple(close[-1].split())]
        ):
            return self._names[tuple(close[0].split())]
        raise ToolError(f"We don't have a service called {text!r}. {self.offered()}")


def _either(names: list[str]) -> str:
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]

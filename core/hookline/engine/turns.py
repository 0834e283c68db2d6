"""Turn-taking: from STT events to "the caller's turn is over" and "the caller barged in".

Pure logic over the STT events and one fact about the agent (is it speaking?), so it is
easy to test; the call session applies the decisions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from ..providers import SpeechStarted, STTEvent, Transcript, UtteranceEnd

__all__ = ["Decision", "TurnTaker"]

_WORD = re.compile(r"[\w'-]+")


@dataclass(frozen=True)
class Decision:
    kind: Literal["speech_started", "activity", "barge_in", "end_turn", "dropped_backchannel"]
    text: str = ""
    reason: str = ""  # for end_turn: "speech_final" | "utterance_end"
    speech_end: float | None = None  # seconds of call audio
    speech_start: float | None = None


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class TurnTaker:
    """Joins final transcripts into the caller's turn and decides when it ends.

    - A turn ends on `speech_final` or `UtteranceEnd` once some final text exists.
    - While the agent speaks, caller speech barges in when it has at least `min_words`
      words and is not only backchannels ("okay", "mhm"); backchannel-only turns spoken
      over the agent are dropped, not answered.
    """

    def __init__(self, min_words: int, backchannels: Iterable[str]) -> None:
        self.min_words = max(1, min_words)
        phrases = sorted((tuple(_words(b)) for b in backchannels if _words(b)), key=len)
        self._backchannels = [p for p in reversed(phrases)]  # longest first
        self._finals: list[str] = []
        self._speech_start: float | None = None
        self._speech_end: float | None = None

    @property
    def pending_text(self) -> str:
        return " ".join(self._finals)

    def is_backchannel(self, text: str) -> bool:
        words = _words(text)
        i = 0
        while i < len(words):
            for phrase in self._backchannels:
                if tuple(words[i : i + len(phrase)]) == phrase:
                    i += len(phrase)
                    break
            else:
                return False
        return True

    def interrupts(self, text: str) -> bool:
        return len(_words(text)) >= self.min_words and not self.is_backchannel(text)

    def feed(self, event: STTEvent, agent_speaking: bool) -> list[Decision]:
        if isinstance(event, SpeechStarted):
            return [Decision("speech_started", speech_start=event.at)]
        if isinstance(event, Transcript):
            return self._transcript(event, agent_speaking)
        if isinstance(event, UtteranceEnd):
            return self._turn_over("utterance_end", agent_speaking)
        return []

    def _transcript(self, t: Transcript, agent_speaking: bool) -> list[Decision]:
        text = t.text.strip()
        out: list[Decision] = []
        if text:
            out.append(Decision("activity", speech_start=t.start))
            if self._speech_start is None:
                self._speech_start = t.start
        if not t.is_final:
            candidate = " ".join([*self._finals, text])
            if text and agent_speaking and self.interrupts(candidate):
                out.append(Decision("barge_in", text=candidate))
            return out
        if text:
            self._finals.append(text)
            self._speech_end = t.end
        if agent_speaking and self._finals and self.interrupts(self.pending_text):
            out.append(Decision("barge_in", text=self.pending_text))
            agent_speaking = False
        if t.speech_final:
            out.extend(self._turn_over("speech_final", agent_speaking))
        return out

    def _turn_over(self, reason: str, agent_speaking: bool) -> list[Decision]:
        if not self._finals:
            return []
        text, start, end = self.pending_text, self._speech_start, self._speech_end
        self._finals, self._speech_start, self._speech_end = [], None, None
        if agent_speaking and not self.interrupts(text):
            return [Decision("dropped_backchannel", text=text)]
        return [Decision("end_turn", text=text, reason=reason, speech_end=end, speech_start=start)]

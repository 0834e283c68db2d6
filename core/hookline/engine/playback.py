"""What the agent sent to the caller, and what the caller actually heard.

Every piece of agent speech (a streamed sentence or a cached phrase) is a `Segment`. Its
audio goes to the leg followed by a mark; the mark coming back means the caller heard it.
On barge-in the unheard segments are dropped *before* the leg is cleared, because a
cleared leg returns its pending marks at once although their audio never played.

Every wait for agent speech (a goodbye before hanging up, an announcement before a
transfer, a phrase waiting for streamed audio to finish) waits on this object, so ending
it in one place wakes them all: `close()` when the leg is gone (no mark will ever come
back), `drop_unheard()` when the call ends for any other reason.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import trio

from ..providers import Message

__all__ = ["Playback", "Segment"]


@dataclass(eq=False)
class Segment:
    text: str
    turn: int
    mark: str
    # The assistant message this sentence belongs to (None for fixed phrases that are
    # not part of the conversation, like the reprompt).
    message: Message | None = None
    flush_seq: int | None = None  # TTS flush that delivers its audio; None for cached audio
    sent: bool = False  # all its audio was handed to the leg, with the mark after it
    heard: bool = False
    dropped: bool = False
    heard_event: trio.Event = field(default_factory=trio.Event)


class Playback:
    def __init__(self, call_id: str) -> None:
        self._marks = (f"{call_id[:8]}-{n}" for n in itertools.count(1))
        self._live: dict[str, Segment] = {}  # mark -> segment not yet heard nor dropped
        self._by_flush: dict[int, Segment] = {}
        self._changed = trio.Event()
        self.closed = False  # the leg is gone: nothing will be heard any more

    def new_segment(self, text: str, turn: int, message: Message | None = None) -> Segment:
        seg = Segment(text=text, turn=turn, mark=next(self._marks), message=message)
        if self.closed:  # born dropped: whoever waits for it is not held up
            seg.dropped = True
            seg.heard_event.set()
            return seg
        self._live[seg.mark] = seg
        self._notify()
        return seg

    def expect_flush(self, seg: Segment, seq: int) -> None:
        seg.flush_seq = seq
        if not seg.dropped:
            self._by_flush[seq] = seg

    def for_flush(self, seq: int) -> Segment | None:
        seg = self._by_flush.pop(seq, None)
        if seg is not None:
            self._notify()
        return seg

    def reached(self, mark: str) -> Segment | None:
        """A mark came back: its segment was heard. Unknown or dropped marks are ignored."""
        seg = self._live.pop(mark, None)
        if seg is None:
            return None
        seg.heard = True
        seg.heard_event.set()
        self._notify()
        return seg

    def drop_unheard(self) -> list[Segment]:
        """Barge-in: every segment not heard yet never will be. Returns them, oldest first."""
        dropped = list(self._live.values())
        for seg in dropped:
            seg.dropped = True
            seg.heard_event.set()  # wake anyone waiting: it will not be heard
        self._live.clear()
        self._by_flush.clear()
        self._notify()
        return dropped

    def drop(self, seg: Segment) -> None:
        """This one segment will not be heard (its audio or mark never reached the leg)."""
        if self._live.pop(seg.mark, None) is not None:
            seg.dropped = True
            seg.heard_event.set()
            if seg.flush_seq is not None:
                self._by_flush.pop(seg.flush_seq, None)
            self._notify()

    def close(self) -> list[Segment]:
        """The leg is gone: no mark will come back, for what was sent or what is sent next."""
        self.closed = True
        return self.drop_unheard()

    @property
    def flush_pending(self) -> bool:
        """Some sentence was sent to TTS and its audio is not complete yet."""
        return bool(self._by_flush)

    @property
    def speaking(self) -> bool:
        """Agent speech is queued or playing and not yet heard in full."""
        return bool(self._live)

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

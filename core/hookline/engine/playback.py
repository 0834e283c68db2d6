"""What the agent sent to the caller, and what the caller actually heard.

Every piece of agent speech (a streamed sentence or a cached phrase) is a `Segment`. Its
audio goes to the leg followed by a mark; the mark coming back means the caller heard it.
On barge-in the unheard segments are dropped *before* the leg is cleared, because a
cleared leg returns its pending marks at once although their audio never played; the
assistant messages they belonged to are cut back, in the same step, to the sentences
the caller heard (before the response's clean-up can look at them).

Every wait for agent speech (a goodbye before hanging up, an announcement before a
transfer, a filler waiting for silence) waits on this object, so ending
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
    flush_seq: int | None = None  # TTS flush that ends its audio; None for cached audio
    heard: bool = False
    dropped: bool = False
    heard_event: trio.Event = field(default_factory=trio.Event)


class Playback:
    def __init__(self, call_id: str) -> None:
        self._marks = (f"{call_id[:8]}-{n}" for n in itertools.count(1))
        self._live: dict[str, Segment] = {}  # mark -> segment not yet heard nor dropped
        # id(message) -> (message, its segments): the message is kept so its id is not reused.
        self._by_message: dict[int, tuple[Message, list[Segment]]] = {}
        self._changed = trio.Event()
        self.closed = False  # the leg is gone: nothing will be heard any more

    def new_segment(self, text: str, turn: int, message: Message | None = None) -> Segment:
        seg = Segment(text=text, turn=turn, mark=next(self._marks), message=message)
        if self.closed:  # born dropped: whoever waits for it is not held up
            seg.dropped = True
            seg.heard_event.set()
            return seg
        self._live[seg.mark] = seg
        if message is not None:
            self._by_message.setdefault(id(message), (message, []))[1].append(seg)
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
        """Barge-in: every segment not heard yet never will be. Returns them, oldest first;
        the messages they belong to keep only their heard sentences."""
        dropped = list(self._live.values())
        for seg in dropped:
            seg.dropped = True
            seg.heard_event.set()  # wake anyone waiting: it will not be heard
        self._live.clear()
        for key in {id(s.message) for s in dropped if s.message is not None}:
            message, segs = self._by_message[key]
            message.content = " ".join(s.text for s in segs if s.heard)
        self._notify()
        return dropped

    def drop(self, seg: Segment) -> None:
        """This one segment will not be heard (its audio or mark never reached the leg)."""
        if self._live.pop(seg.mark, None) is not None:
            seg.dropped = True
            seg.heard_event.set()
            self._notify()

    def close(self) -> list[Segment]:
        """The leg is gone: no mark will come back, for what was sent or what is sent next."""
        self.closed = True
        return self.drop_unheard()

    @property
    def speaking(self) -> bool:
        """Agent speech is queued or playing and not yet heard in full."""
        return bool(self._live)

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

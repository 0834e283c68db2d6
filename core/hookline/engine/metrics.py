"""Per-turn timestamps (trio's monotonic clock) and the latencies derived from them.

voice_to_voice runs from the end of the caller's speech until the first agent audio has
been handed to telephony and written (the leg's `play()` returned: for Twilio, the media
message is on the socket). The providers' shares are the STT's turn detection (speech end to end of
turn), the LLM's time to its first speakable sentence (tools included) and the TTS's time
to first byte; what remains is hookline's own overhead.

Under load the trio thread runs late, and a provider's share ends when the task awaiting
it finally runs, not when the provider answered: the lag would be booked to the provider.
`LoopLag` records when the thread ran late. The lag that can have delayed a share is taken
out of it and booked as runtime overhead: a stall still running, or only just over, when
the share ended (its answer waited for the thread) and, for a request, one at its start
(the request waited to be sent). A stall in the middle of a long share, with the thread
on time again before its end, delayed nothing: the provider was still at work (the
STT's endpointing runs on audio time, ~300 ms of it). A stall at an end is booked whole,
so the providers' figures are what they cost at least, the overhead what hookline cost
at most. `loop_lag` is the part of the overhead that was the thread running late.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter

import trio

__all__ = ["LoopLag", "TurnTiming"]

_BEGIN, _END = itemgetter(0), itemgetter(1)  # of a late interval (deadline, woke)


def _ms(later: float | None, earlier: float | None) -> float | None:
    if later is None or earlier is None:
        return None
    return max(0.0, (later - earlier) * 1000.0)


class LoopLag:
    """How late the trio thread ran, and when: a task sleeps `tick_s` again and again,
    and each wake-up later than `min_lag_s` past its deadline keeps the late interval
    (deadline, woke). `between(t0, t1)` sums the late time inside [t0, t1].

    One per runtime (`Runtime.loop_lag`, run by `hookline serve`). A stall is seen up to one tick
    late (the probe's deadline may fall inside it), so `between` can miss up to `tick_s`
    of each stall: it never books more lag than there was. The newest `keep` intervals
    are kept; they start at least `tick_s` apart, so 4096 cover over a minute even when
    every tick is late, longer than a turn's metrics wait (they are computed when the
    agent's turn closes).
    """

    def __init__(
        self,
        tick_s: float = 0.02,
        *,
        min_lag_s: float = 0.001,
        keep: int = 4096,
        busy: Callable[[], bool] = lambda: True,
        idle_tick_s: float = 0.25,
    ):
        self.tick_s = tick_s
        self.min_lag_s = min_lag_s
        # Each wake-up of an idle process costs ~0.25 ms of CPU here; with no call in
        # progress there is no turn to measure, so the probe ticks every `idle_tick_s`.
        self._busy = busy
        self.idle_tick_s = idle_tick_s
        self._late: deque[tuple[float, float]] = deque(maxlen=keep)  # (deadline, woke)
        self.running = False

    async def run(self) -> None:
        late, tick, min_lag = self._late, self.tick_s, self.min_lag_s
        self.running = True
        try:
            while True:
                deadline = trio.current_time() + (tick if self._busy() else self.idle_tick_s)
                await trio.sleep_until(deadline)
                woke = trio.current_time()
                if woke - deadline > min_lag:
                    late.append((deadline, woke))
        finally:
            self.running = False

    def for_turns(self) -> LoopLag | None:
        """This probe while it runs; None (no loop lag booked) when it does not."""
        return self if self.running else None

    def _overlapping(self, t0: float, t1: float) -> Iterator[tuple[float, float]]:
        """The late intervals that overlap (t0, t1).

        The intervals are kept in order and never overlap (the probe's next deadline is
        after its last wake-up), so both ends are found by bisection. A turn's metrics are
        computed seconds after the turn, and under load the thread is late at nearly
        every tick: walking back from the newest interval cost ~1 ms per turn (some 50
        intervals a second since, for each of the turn's shares) on the thread that
        carries every call's audio.
        """
        late = self._late
        first = bisect_right(late, t0, key=_END)  # the first that ends after t0
        stop = bisect_left(late, t1, key=_BEGIN)  # ... and the first that begins at t1
        for i in range(first, stop):
            yield late[i]

    def between(self, t0: float, t1: float) -> float:
        """Seconds the trio thread ran late inside [t0, t1] (as far as the probe saw)."""
        return sum((min(end, t1) - max(begin, t0) for begin, end in self._overlapping(t0, t1)), 0.0)

    def delaying(self, t0: float, t1: float, *, start: bool) -> float:
        """Seconds inside [t0, t1] of the stalls that can have delayed what happened at t1
        and, with `start`, at t0. A stall is one late interval, counted whole (its overlap
        with the window). At t1: one that ended less than a tick before t1 (the probe's
        next look, a tick after it, had not yet found the thread on time). At t0: one
        under way within a tick after t0; the probe sees a stall begin at its own
        deadline, up to a tick after the thread stopped, so one seen beginning less than
        two ticks after t0."""
        total, tick = 0.0, self.tick_s
        for begin, end in self._overlapping(t0, t1):
            if end > t1 - tick or (start and begin < t0 + 2 * tick):
                total += min(end, t1) - max(begin, t0)
        return total


@dataclass
class TurnTiming:
    speech_end: float | None = None  # caller stopped speaking (from STT word timings)
    last_final: float | None = None  # the last final transcript of the turn arrived
    turn_end: float | None = None  # the engine decided the turn is over
    llm_start: float | None = None
    llm_first_token: float | None = None
    first_sentence: float | None = None  # first sentence ready (or filler chosen)
    tts_request: float | None = None  # first speak+flush sent to TTS
    tts_first_byte: float | None = None
    first_audio: float | None = None  # first agent audio handed to the leg
    first_audio_cached: bool = False  # ... and it was a cached phrase (filler)
    tool_ms: list[float] = field(default_factory=list)

    def metrics(self, lag: LoopLag | None = None) -> dict[str, float]:
        """The turn's latencies in ms. With `lag` (the runtime's probe), each provider share
        loses the loop lag that can have delayed it (see the module's doc), and `loop_lag`
        is stored."""

        kept: dict[str, float] = {}  # per share: the lag left in it (delayed nothing), ms

        def share(
            later: float | None,
            earlier: float | None,
            *,
            request: bool,
            all_lag: bool = False,
            name: str = "",
        ) -> float | None:
            ms = _ms(later, earlier)
            if ms is None or lag is None:
                return ms
            assert later is not None and earlier is not None
            inside = lag.between(earlier, later)
            late = inside if all_lag else lag.delaying(earlier, later, start=request)
            if name:
                kept[name] = (inside - late) * 1000.0
            return max(0.0, ms - late * 1000.0)

        # The STT hears the call's audio as it comes: no request starts its share.
        m: dict[str, float | None] = {
            "stt_final": share(self.last_final, self.speech_end, request=False),
            "end_of_turn_delay": share(self.turn_end, self.speech_end, request=False, name="stt"),
            "llm_first_token": share(self.llm_first_token, self.llm_start, request=True),
            "tts_first_byte": share(
                self.tts_first_byte, self.tts_request, request=True, name="tts"
            ),
            "voice_to_voice": _ms(self.first_audio, self.speech_end),
        }
        if self.tool_ms:
            m["tool"] = sum(self.tool_ms)
            m["tool_rounds"] = float(len(self.tool_ms))
        # The LLM's whole share (first token, the rest of its first sentence, tool rounds):
        # stored so a turn's parts add up to its voice-to-voice (the dashboard's waterfall).
        # With tool rounds, requests and tools (hookline's own code) run all through it:
        # all of its lag is the runtime's.
        m["llm_first_sentence"] = share(
            self.first_sentence,
            self.llm_start,
            request=True,
            all_lag=bool(self.tool_ms),
            name="llm",
        )
        v2v = m["voice_to_voice"]
        if v2v is not None:
            shares = (m["end_of_turn_delay"] or 0.0) + (m["llm_first_sentence"] or 0.0)
            if self.first_audio_cached:
                m["first_audio_cached"] = 1.0  # a cached phrase: the TTS took no share
            else:
                shares += m["tts_first_byte"] or 0.0
            m["runtime_overhead"] = max(0.0, v2v - shares)
            if lag is not None:
                # The part of the overhead that was the thread running late: all the lag
                # inside voice-to-voice less what stayed in the shares taken out of it.
                assert self.first_audio is not None and self.speech_end is not None
                inside = lag.between(self.speech_end, self.first_audio) * 1000.0
                left = kept.get("stt", 0.0) + kept.get("llm", 0.0)
                if not self.first_audio_cached:
                    left += kept.get("tts", 0.0)
                m["loop_lag"] = max(0.0, inside - left)
        return {k: round(v, 3) for k, v in m.items() if v is not None}

"""Per-turn timestamps (trio's monotonic clock) and the latencies derived from them.

voice_to_voice runs from the end of the caller's speech until the first agent audio has
been handed to telephony and written (the leg's `play()` returned: for Twilio, the media
message is on the socket). The providers' shares are the STT's turn detection (speech end to end of
turn), the LLM's time to its first speakable sentence (tools included) and the TTS's time
to first byte; what remains is hookline's own overhead.

Under load the trio thread runs late, and a provider's share ends when the task awaiting
it finally runs, not when the provider answered: the lag would be booked to the provider.
`LoopLag` records when the thread ran late; the lag that fell inside a share is taken out
of it and booked as runtime overhead (`loop_lag` is all the lag inside the turn's
voice-to-voice). Lag that overlapped a provider's own work goes to the runtime too: the
providers' figures are what they cost at least, the overhead what hookline cost at most.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

__all__ = ["LagBetween", "LoopLag", "TurnTiming"]

# (t0, t1) on trio's clock -> seconds the trio thread ran late between them.
LagBetween = Callable[[float, float], float]


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

    def for_turns(self) -> LagBetween | None:
        """`between` while the probe runs; None (no loop lag booked) when it does not."""
        return self.between if self.running else None

    def between(self, t0: float, t1: float) -> float:
        """Seconds the trio thread ran late inside [t0, t1] (as far as the probe saw)."""
        total = 0.0
        for start, end in reversed(self._late):  # newest first: a turn is recent
            if end <= t0:
                break
            total += max(0.0, min(end, t1) - max(start, t0))
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

    def metrics(self, lag: LagBetween | None = None) -> dict[str, float]:
        """The turn's latencies in ms. With `lag` (`LoopLag.between`), each provider
        share loses the loop lag that fell inside it, and `loop_lag` is stored."""

        def share(later: float | None, earlier: float | None) -> float | None:
            ms = _ms(later, earlier)
            if ms is None or lag is None:
                return ms
            assert later is not None and earlier is not None
            return max(0.0, ms - lag(earlier, later) * 1000.0)

        m: dict[str, float | None] = {
            "stt_final": share(self.last_final, self.speech_end),
            "end_of_turn_delay": share(self.turn_end, self.speech_end),
            "llm_first_token": share(self.llm_first_token, self.llm_start),
            "tts_first_byte": share(self.tts_first_byte, self.tts_request),
            "voice_to_voice": _ms(self.first_audio, self.speech_end),
        }
        if self.tool_ms:
            m["tool"] = sum(self.tool_ms)
            m["tool_rounds"] = float(len(self.tool_ms))
        # The LLM's whole share (first token, the rest of its first sentence, tool rounds):
        # stored so a turn's parts add up to its voice-to-voice (the dashboard's waterfall).
        m["llm_first_sentence"] = share(self.first_sentence, self.llm_start)
        v2v = m["voice_to_voice"]
        if v2v is not None:
            shares = (m["end_of_turn_delay"] or 0.0) + (m["llm_first_sentence"] or 0.0)
            if self.first_audio_cached:
                m["first_audio_cached"] = 1.0  # a cached phrase: the TTS took no share
            else:
                shares += m["tts_first_byte"] or 0.0
            m["runtime_overhead"] = max(0.0, v2v - shares)
            if lag is not None:
                assert self.first_audio is not None and self.speech_end is not None
                m["loop_lag"] = lag(self.speech_end, self.first_audio) * 1000.0
        return {k: round(v, 3) for k, v in m.items() if v is not None}

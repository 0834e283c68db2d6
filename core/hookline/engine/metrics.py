"""Per-turn timestamps (trio's monotonic clock) and the latencies derived from them.

voice_to_voice runs from the end of the caller's speech to the first agent audio handed
to telephony. The providers' shares are the STT's turn detection (speech end to end of
turn), the LLM's time to its first speakable sentence (tools included) and the TTS's time
to first byte; what remains is hookline's own overhead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["TurnTiming"]


def _ms(later: float | None, earlier: float | None) -> float | None:
    if later is None or earlier is None:
        return None
    return max(0.0, (later - earlier) * 1000.0)


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

    def metrics(self) -> dict[str, float]:
        m: dict[str, float | None] = {
            "stt_final": _ms(self.last_final, self.speech_end),
            "end_of_turn_delay": _ms(self.turn_end, self.speech_end),
            "llm_first_token": _ms(self.llm_first_token, self.llm_start),
            "tts_first_byte": _ms(self.tts_first_byte, self.tts_request),
            "voice_to_voice": _ms(self.first_audio, self.speech_end),
        }
        if self.tool_ms:
            m["tool"] = sum(self.tool_ms)
            m["tool_rounds"] = float(len(self.tool_ms))
        # The LLM's whole share (first token, the rest of its first sentence, tool rounds):
        # stored so a turn's parts add up to its voice-to-voice (the dashboard's waterfall).
        m["llm_first_sentence"] = _ms(self.first_sentence, self.llm_start)
        v2v = m["voice_to_voice"]
        if v2v is not None:
            shares = (m["end_of_turn_delay"] or 0.0) + (m["llm_first_sentence"] or 0.0)
            if self.first_audio_cached:
                m["first_audio_cached"] = 1.0  # a cached phrase: the TTS took no share
            else:
                shares += m["tts_first_byte"] or 0.0
            m["runtime_overhead"] = max(0.0, v2v - shares)
        return {k: round(v, 3) for k, v in m.items() if v is not None}

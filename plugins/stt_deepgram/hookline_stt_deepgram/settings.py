"""`[stt.deepgram]`: Deepgram live transcription settings, with phone-call defaults."""

from __future__ import annotations

from typing import Annotated

import msgspec

from hookline import NonNegativeInt, NonNegativeSeconds, PositiveInt, Seconds

__all__ = ["BYTES_PER_SAMPLE", "DeepgramSTTSettings"]

# Raw encodings whose byte count maps to audio time; the reconnect replay and the
# timestamp mapping need that, so compressed encodings (opus, flac...) are not offered.
BYTES_PER_SAMPLE = {"mulaw": 1, "alaw": 1, "linear16": 2, "linear32": 4}


class DeepgramSTTSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Query parameters of `/v1/listen` plus the client's own timing limits.

    `encoding`, `sample_rate` and `channels` describe the audio the engine sends; the
    engine's format (8 kHz mono mu-law on the phone path) wins if they ever disagree.
    """

    url: str = "wss://api.deepgram.com/v1/listen"
    api_key_env: str = "DEEPGRAM_API_KEY"
    model: str = "nova-2-phonecall"
    language: str = "en-US"
    encoding: str = "mulaw"
    sample_rate: PositiveInt = 8000
    channels: PositiveInt = 1
    interim_results: bool = True
    # ms of silence before a final carries speech_final; None sends `endpointing=false`.
    endpointing_ms: NonNegativeInt | None = 300
    # Needs interim_results; Deepgram rejects values under 1000. None leaves it off.
    utterance_end_ms: Annotated[int, msgspec.Meta(ge=1000)] | None = 1000
    vad_events: bool = True
    smart_format: bool = True
    punctuate: bool = True
    keyterms: list[str] = []  # Nova-3 only: `keyterm=` once per term
    keywords: list[str] = []  # Nova-2 and older: "word" or "word:boost"
    tag: str = "hookline"

    # Client behaviour.
    keepalive_s: Seconds = (
        4.0  # KeepAlive after this long without audio (server idles out at ~10 s)
    )
    connect_timeout_s: Seconds = 5.0
    send_timeout_s: Seconds = 5.0  # a send stuck this long counts as a dead connection
    reconnect_timeout_s: NonNegativeSeconds = (
        5.0  # how long one outage may last before the call fails
    )
    max_reconnects: NonNegativeInt = 10  # per call
    replay_max_s: NonNegativeSeconds = 30.0  # audio kept for replay after the last final result
    close_timeout_s: Seconds = 2.0  # wait for the last results after CloseStream
    # Caller audio goes out once this much has gathered (Deepgram takes 20-100 ms
    # chunks). 20 = every Twilio frame as it arrives; more is fewer messages, sends and
    # task switches per call (CPU) for up to that much later audio at Deepgram.
    # Finalize and CloseStream always send what has gathered first.
    send_chunk_ms: Annotated[int, msgspec.Meta(ge=0, le=250)] = 20

    def __post_init__(self) -> None:
        # Raised as ValueError so msgspec reports it, and decode_section names the key.
        if self.encoding not in BYTES_PER_SAMPLE:
            raise ValueError(
                f"encoding {self.encoding!r} is not supported "
                f"(use one of {', '.join(sorted(BYTES_PER_SAMPLE))})"
            )
        if self.utterance_end_ms is not None and not self.interim_results:
            raise ValueError("utterance_end_ms needs interim_results = true")
        if not self.url.startswith(("ws://", "wss://")):
            raise ValueError(f"url {self.url!r} must start with ws:// or wss://")

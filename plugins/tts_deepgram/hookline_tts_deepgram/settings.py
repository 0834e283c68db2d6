"""The `[tts.deepgram]` config section."""

from __future__ import annotations

from typing import Annotated

import msgspec

from hookline import NonNegativeInt, NonNegativeSeconds, PositiveInt, Seconds

__all__ = ["DeepgramTTSSettings"]


class DeepgramTTSSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Deepgram Aura text-to-speech.

    `encoding`/`sample_rate` are what the voice is asked for; the phone path needs mu-law
    8 kHz, and a call whose audio format differs wins (with a warning in the log).
    `url`/`base_url` point at Deepgram (tests point them at the loopback fake).
    """

    model: str = "aura-2-thalia-en"
    encoding: str = "mulaw"
    sample_rate: PositiveInt = 8000
    # Aura's speaking rate multiplier; Deepgram accepts 0.7 to 1.5. None: the voice's own.
    speed: Annotated[float, msgspec.Meta(ge=0.7, le=1.5)] | None = None
    url: str = "wss://api.deepgram.com/v1/speak"
    base_url: str = "https://api.deepgram.com"
    api_key_env: str = "DEEPGRAM_API_KEY"
    # connecting and reconnecting the streaming socket
    connect_timeout_s: Seconds = 5.0
    send_timeout_s: Seconds = 5.0
    reconnect_attempts: NonNegativeInt = 3
    # After the server closes an idle socket that lived at least this long, re-open it at
    # once (warm); one that dies younger is re-opened only when there is text to speak.
    rewarm_min_lifetime_s: NonNegativeSeconds = 5.0
    # REST synthesis: bounded retry on 429/5xx and network errors
    request_timeout_s: Seconds = 15.0
    max_retries: NonNegativeInt = 3
    retry_base_s: NonNegativeSeconds = 0.25
    retry_max_s: NonNegativeSeconds = 4.0
    # Deepgram ignores more than 20 Flush per 60 s on one socket; each socket stays under
    # with a sliding window, and when one's budget is spent the call goes on on a new
    # socket (with a budget of its own) rather than waiting for a slot.
    flush_budget: PositiveInt = 18
    flush_window_s: Seconds = 60.0
    # A Flush waits while this many are unanswered; flushes asked for meanwhile are merged.
    max_flushes_in_flight: PositiveInt = 1

"""The `[tts.deepgram]` config section."""

from __future__ import annotations

import msgspec

__all__ = ["DeepgramTTSSettings"]


class DeepgramTTSSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Deepgram Aura text-to-speech.

    `encoding`/`sample_rate` are what the voice is asked for; the phone path needs mu-law
    8 kHz, and a call whose audio format differs wins (with a warning in the log).
    `url`/`base_url` point at Deepgram (tests point them at the loopback fake).
    """

    model: str = "aura-2-thalia-en"
    encoding: str = "mulaw"
    sample_rate: int = 8000
    speed: float | None = None
    url: str = "wss://api.deepgram.com/v1/speak"
    base_url: str = "https://api.deepgram.com"
    api_key_env: str = "DEEPGRAM_API_KEY"
    # connecting and reconnecting the streaming socket
    connect_timeout_s: float = 5.0
    send_timeout_s: float = 5.0
    reconnect_attempts: int = 3
    # After the server closes an idle socket that lived at least this long, re-open it at
    # once (warm); one that dies younger is re-opened only when there is text to speak.
    rewarm_min_lifetime_s: float = 5.0
    # REST synthesis: bounded retry on 429/5xx and network errors
    request_timeout_s: float = 15.0
    max_retries: int = 3
    retry_base_s: float = 0.25
    retry_max_s: float = 4.0
    # Deepgram ignores more than 20 Flush per 60 s; stay under with a sliding window.
    flush_budget: int = 18
    flush_window_s: float = 60.0
    # A Flush waits while this many are unanswered; flushes asked for meanwhile are merged.
    max_flushes_in_flight: int = 1

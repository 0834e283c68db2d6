"""Settings of the Twilio telephony provider (`[telephony.twilio]` in the config)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from hookline import PositiveInt, Seconds

__all__ = ["TwilioSettings"]
# "https://host[:port][/prefix]" or empty; no query, no trailing junk.
BaseUrl = Annotated[str, msgspec.Meta(pattern=r"^(https?://[^/?#\s]+(/[^?#\s]*)?)?$")]


class TwilioSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # The externally visible base URL (scheme and host, e.g. "https://agent.example.com").
    # It builds the TwiML stream URL and the URL every signature is checked against.
    # Empty: derive it per request from X-Forwarded-Proto/Host, else Host.
    public_url: BaseUrl = ""
    auth_token_env: str = "TWILIO_AUTH_TOKEN"
    account_sid_env: str = "TWILIO_ACCOUNT_SID"
    # Where the REST client sends call updates; tests point it at the loopback fake.
    api_base_url: BaseUrl = "https://api.twilio.com"
    # Turning this off accepts unsigned requests; it is logged loudly, start-up and per call.
    validate_signatures: bool = True
    # How long the per-call stream token (and the call slot reserved for it) stays valid.
    # Twilio opens the stream within a second or two of reading the TwiML; a call whose
    # stream never comes must not keep a slot from the next caller for long.
    token_ttl_s: Seconds = 10.0
    # Stream tokens are HMAC-signed, so any replica can accept the stream of a call whose
    # webhook another replica answered. The key comes from this environment variable,
    # shared by every replica; when it is unset, from the Twilio auth token (which every
    # replica has anyway), domain-separated. Set it to rotate the two independently.
    # Not named `*_env`: those are required secrets (`hookline check`), this one is optional.
    stream_token_key_variable: str = "HOOKLINE_STREAM_KEY"
    # How long an answered CallSid is remembered, so that a replayed webhook (Twilio's
    # signatures carry no timestamp) gets no second stream: Twilio's longest call (4 h)
    # plus a margin. At most `replay_memory` CallSids are kept (~200 bytes each).
    replay_window_s: Seconds = 5 * 3600.0
    replay_memory: PositiveInt = 100_000
    # A media stream that sends no `start` within this many seconds is closed.
    start_timeout_s: Seconds = 10.0
    # Inbound WebSocket messages or webhook bodies larger than this are dropped.
    max_message_bytes: PositiveInt = 65536
    # Bound on one REST request (hang-up, transfer).
    rest_timeout_s: Seconds = 10.0
    # How long a transfer rings the person (TwiML <Dial timeout>) before the caller comes
    # back to the agent, who offers to take a message.
    transfer_timeout_s: Annotated[int, msgspec.Meta(ge=5, le=600)] = 20
    # Name of the <Stream> in TwiML (shows in Twilio's console and status callbacks).
    stream_name: str = "hookline"

"""Twilio Media Streams messages (protocols.md §1.2, §1.3) as msgspec Structs.

Inbound messages are one tagged union on `event`, decoded with one typed decoder.
Payloads are `bytes`: msgspec decodes and encodes the base64 text itself.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "KNOWN_EVENTS",
    "Clear",
    "Connected",
    "Dtmf",
    "DtmfBody",
    "Inbound",
    "Mark",
    "MarkBody",
    "Media",
    "MediaBody",
    "MediaFormat",
    "OutMark",
    "OutMedia",
    "OutMediaBody",
    "Start",
    "StartBody",
    "Stop",
    "StopBody",
    "classify_error",
    "decode_inbound",
    "encode",
    "event_name",
]


class _In(msgspec.Struct, tag_field="event", kw_only=True):
    pass


class Connected(_In, tag="connected", kw_only=True):
    protocol: str = "Call"
    version: str = ""


class MediaFormat(msgspec.Struct):
    encoding: str = "audio/x-mulaw"
    sampleRate: int = 8000
    channels: int = 1


class StartBody(msgspec.Struct, kw_only=True):
    streamSid: str
    callSid: str
    accountSid: str = ""
    tracks: list[str] = []
    mediaFormat: MediaFormat = msgspec.field(default_factory=MediaFormat)
    customParameters: dict[str, str] = {}


class Start(_In, tag="start", kw_only=True):
    sequenceNumber: str = ""
    streamSid: str = ""
    start: StartBody


class MediaBody(msgspec.Struct, kw_only=True):
    payload: bytes
    track: str = "inbound"
    chunk: str = ""
    timestamp: str = ""


class Media(_In, tag="media", kw_only=True):
    sequenceNumber: str = ""
    streamSid: str
    media: MediaBody


class DtmfBody(msgspec.Struct, kw_only=True):
    digit: str
    track: str = "inbound_track"


class Dtmf(_In, tag="dtmf", kw_only=True):
    sequenceNumber: str = ""
    streamSid: str
    dtmf: DtmfBody


class MarkBody(msgspec.Struct):
    name: str


class Mark(_In, tag="mark", kw_only=True):
    sequenceNumber: str = ""
    streamSid: str
    mark: MarkBody


class StopBody(msgspec.Struct, kw_only=True):
    accountSid: str = ""
    callSid: str = ""


class Stop(_In, tag="stop", kw_only=True):
    sequenceNumber: str = ""
    streamSid: str
    stop: StopBody = msgspec.field(default_factory=StopBody)


Inbound = Connected | Start | Media | Dtmf | Mark | Stop

KNOWN_EVENTS = frozenset({"connected", "start", "media", "dtmf", "mark", "stop"})


# Outbound (app -> Twilio).
class _Out(msgspec.Struct, tag_field="event", kw_only=True):
    streamSid: str


class OutMediaBody(msgspec.Struct):
    payload: bytes


class OutMedia(_Out, tag="media", kw_only=True):
    media: OutMediaBody


class OutMark(_Out, tag="mark", kw_only=True):
    mark: MarkBody


class Clear(_Out, tag="clear", kw_only=True):
    pass


class _EventOnly(msgspec.Struct):
    event: str = ""


_inbound = msgspec.json.Decoder(Inbound)
_event_only = msgspec.json.Decoder(_EventOnly)
_encoder = msgspec.json.Encoder()


def decode_inbound(data: str | bytes) -> Inbound:
    """Decode one Twilio -> app message; raise msgspec errors (see `classify_error`)."""
    return _inbound.decode(data)


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


def event_name(data: str | bytes) -> str:
    """The `event` of a message that failed to decode ("" if it is not even JSON)."""
    try:
        return _event_only.decode(data).event
    except msgspec.DecodeError:
        return ""


def classify_error(data: str | bytes, error: msgspec.DecodeError) -> str:
    """Name the kind of bad input a failed decode was, for the per-call counters."""
    if not isinstance(error, msgspec.ValidationError):
        return "malformed_json"
    name = event_name(data)
    if not name:
        return "invalid_message"
    if name not in KNOWN_EVENTS:
        return "unknown_event"
    if "$.media.payload" in str(error):
        return "invalid_base64"
    return "invalid_message"

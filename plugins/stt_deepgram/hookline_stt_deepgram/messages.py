"""The `/v1/listen` wire messages as msgspec Structs (protocols.md §2).

Server messages are a tagged union on `type`; fields we do not use are skipped by the
decoder, so new optional fields from Deepgram never break decoding. A message with an
unknown `type` fails the union and is then identified with `Envelope` for the log line.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "CLOSE_STREAM",
    "FINALIZE",
    "KEEP_ALIVE",
    "Alternative",
    "Channel",
    "Envelope",
    "ErrorBody",
    "ListenMetadata",
    "ListenResults",
    "ListenSpeechStarted",
    "ListenUtteranceEnd",
    "ServerMessage",
    "Word",
    "decode_error_body",
    "decode_server_message",
]


class Word(msgspec.Struct):
    word: str
    start: float
    end: float
    confidence: float = 0.0
    punctuated_word: str | None = None


class Alternative(msgspec.Struct):
    transcript: str = ""
    confidence: float = 0.0
    words: list[Word] = []


class Channel(msgspec.Struct):
    alternatives: list[Alternative] = []


class ListenResults(msgspec.Struct, tag="Results", tag_field="type"):
    """`start`/`duration` are seconds from the start of *this* stream (connection)."""

    start: float = 0.0
    duration: float = 0.0
    is_final: bool = False
    speech_final: bool = False
    from_finalize: bool = False
    channel: Channel = msgspec.field(default_factory=Channel)


class ListenSpeechStarted(msgspec.Struct, tag="SpeechStarted", tag_field="type"):
    timestamp: float
    channel: list[int] = []


class ListenUtteranceEnd(msgspec.Struct, tag="UtteranceEnd", tag_field="type"):
    last_word_end: float
    channel: list[int] = []


class ListenMetadata(msgspec.Struct, tag="Metadata", tag_field="type"):
    """The closing summary after CloseStream."""

    request_id: str = ""
    duration: float = 0.0
    channels: int = 0


ServerMessage = ListenResults | ListenSpeechStarted | ListenUtteranceEnd | ListenMetadata


class Envelope(msgspec.Struct):
    type: str = ""


class ErrorBody(msgspec.Struct):
    """The JSON body of a refused upgrade."""

    err_code: str = ""
    err_msg: str = ""
    request_id: str = ""


class _Control(msgspec.Struct):
    type: Literal["KeepAlive", "Finalize", "CloseStream"]


# Control messages are JSON text frames; encoded once.
KEEP_ALIVE = msgspec.json.encode(_Control("KeepAlive")).decode()
FINALIZE = msgspec.json.encode(_Control("Finalize")).decode()
CLOSE_STREAM = msgspec.json.encode(_Control("CloseStream")).decode()

_server_decoder = msgspec.json.Decoder(ServerMessage)
_envelope_decoder = msgspec.json.Decoder(Envelope)
_error_decoder = msgspec.json.Decoder(ErrorBody)


def decode_server_message(text: str | bytes) -> ServerMessage | str:
    """The typed message, or a short description of why it was not understood."""
    try:
        return _server_decoder.decode(text)
    except msgspec.DecodeError as err:
        try:
            kind = _envelope_decoder.decode(text).type
        except msgspec.DecodeError:
            return f"malformed message ({err})"
        if kind in ("Results", "SpeechStarted", "UtteranceEnd", "Metadata"):
            return f"malformed {kind} message ({err})"
        return f"unknown message type {kind!r}"


def decode_error_body(body: bytes | None) -> ErrorBody:
    if body:
        try:
            return _error_decoder.decode(body)
        except msgspec.DecodeError:
            return ErrorBody(err_msg=body[:200].decode("utf-8", "replace"))
    return ErrorBody()

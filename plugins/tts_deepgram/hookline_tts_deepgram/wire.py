"""Deepgram `/v1/speak` WebSocket messages (protocols.md §3) as msgspec Structs."""

from __future__ import annotations

import msgspec

__all__ = [
    "MAX_SPEAK_CHARS",
    "Clear",
    "Cleared",
    "Close",
    "Flush",
    "Flushed",
    "Metadata",
    "ServerMessage",
    "ServerWarning",
    "Speak",
    "decode_server",
    "encode",
]

# Deepgram documents 2000 characters per REST request; assume the same per Speak message.
MAX_SPEAK_CHARS = 2000


# client -> server


class Speak(msgspec.Struct, tag="Speak", tag_field="type"):
    text: str


class Flush(msgspec.Struct, tag="Flush", tag_field="type"):
    pass


class Clear(msgspec.Struct, tag="Clear", tag_field="type"):
    pass


class Close(msgspec.Struct, tag="Close", tag_field="type"):
    pass


# server -> client (binary frames are audio)


class Metadata(msgspec.Struct, tag="Metadata", tag_field="type"):
    request_id: str = ""
    model_name: str = ""
    model_version: str = ""
    model_uuid: str = ""


class Flushed(msgspec.Struct, tag="Flushed", tag_field="type"):
    sequence_id: int = 0


class Cleared(msgspec.Struct, tag="Cleared", tag_field="type"):
    sequence_id: int = 0


class ServerWarning(msgspec.Struct, tag="Warning", tag_field="type"):
    description: str = ""
    code: str = ""


ServerMessage = Metadata | Flushed | Cleared | ServerWarning

decode_server = msgspec.json.Decoder(ServerMessage).decode
_encoder = msgspec.json.Encoder()


def encode(message: Speak | Flush | Clear | Close) -> str:
    """A client message as the text of a WebSocket text frame."""
    return _encoder.encode(message).decode()

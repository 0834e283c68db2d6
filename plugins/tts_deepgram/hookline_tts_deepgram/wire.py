"""Deepgram `/v1/speak` WebSocket messages (protocols.md §3) as msgspec Structs."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlencode

import msgspec

if TYPE_CHECKING:
    from hookline import AudioFormat

    from .settings import DeepgramTTSSettings

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
    "speak_url",
    "split_text",
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


def speak_url(settings: DeepgramTTSSettings, fmt: AudioFormat) -> str:
    params: dict[str, str | int | float] = {
        "model": settings.model,
        "encoding": fmt.encoding,
        "sample_rate": fmt.sample_rate,
    }
    if settings.speed is not None:
        params["speed"] = settings.speed
    sep = "&" if "?" in settings.url else "?"
    return f"{settings.url}{sep}{urlencode(params)}"


def split_text(text: str, limit: int = MAX_SPEAK_CHARS) -> list[str]:
    """Cut text longer than one Speak message allows, at a space where possible."""
    parts = []
    while len(text) > limit:
        cut = text.rfind(" ", 0, limit)
        cut = limit if cut <= 0 else cut
        parts.append(text[:cut])
        text = text[cut:]
    parts.append(text)
    return parts

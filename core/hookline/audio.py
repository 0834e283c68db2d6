"""Audio inside a call is 8 kHz mono mu-law, 20 ms = 160 bytes per frame (Twilio's format).

These helpers convert to and from 16-bit PCM for fakes, tests and plugins whose provider
wants PCM. They are table lookups over `bytes.translate`-style maps and `array`, so they
stay off the per-frame hot path of the phone itself (which never converts).
"""

from __future__ import annotations

import array
import math
import sys

import msgspec

__all__ = [
    "FRAME_BYTES",
    "FRAME_SECONDS",
    "MULAW_8K",
    "SAMPLE_RATE",
    "AudioFormat",
    "frames",
    "mulaw_silence",
    "mulaw_to_pcm16",
    "pcm16_to_mulaw",
    "rms_mulaw",
    "seconds_of",
    "tone_mulaw",
]

SAMPLE_RATE = 8000
FRAME_SECONDS = 0.020
FRAME_BYTES = 160


class AudioFormat(msgspec.Struct, frozen=True):
    """How audio on a stream is encoded. hookline's phone path is always MULAW_8K."""

    encoding: str = "mulaw"
    sample_rate: int = SAMPLE_RATE
    channels: int = 1


MULAW_8K = AudioFormat()

_BIAS = 0x84
_CLIP = 32635


def _decode_byte(u: int) -> int:
    u = ~u & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    sample = ((mantissa << 3) + _BIAS) << exponent
    sample -= _BIAS
    return -sample if sign else sample


def _encode_sample(sample: int) -> int:
    sign = 0x80 if sample < 0 else 0
    if sample < 0:
        sample = -sample
    sample = min(sample, _CLIP) + _BIAS
    exponent = 7
    mask = 0x4000
    while exponent > 0 and not sample & mask:
        exponent -= 1
        mask >>= 1
    mantissa = (sample >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


_DECODE = [_decode_byte(u) for u in range(256)]
# Encoding table indexed by the 16-bit sample as unsigned (sample & 0xFFFF).
_ENCODE = bytes(_encode_sample(s - 65536 if s >= 32768 else s) for s in range(65536))
# |sample| / 128 as one byte per mu-law code, so the level is a C-speed translate + sum.
_LEVEL_BYTES = bytes(min(255, abs(v) >> 7) for v in _DECODE)


def mulaw_to_pcm16(data: bytes) -> bytes:
    """mu-law bytes to little-endian signed 16-bit PCM."""
    pcm = array.array("h", (_DECODE[b] for b in data))
    if sys.byteorder != "little":
        pcm.byteswap()
    return pcm.tobytes()


def pcm16_to_mulaw(data: bytes) -> bytes:
    """Little-endian signed 16-bit PCM to mu-law bytes."""
    pcm = array.array("H")
    pcm.frombytes(data)
    if sys.byteorder != "little":
        pcm.byteswap()
    return bytes(_ENCODE[s] for s in pcm)


def rms_mulaw(data: bytes) -> float:
    """Mean absolute level of mu-law audio on the 16-bit scale (0 for digital silence)."""
    if not data:
        return 0.0
    return sum(data.translate(_LEVEL_BYTES)) * 128 / len(data)


def mulaw_silence(seconds: float) -> bytes:
    return b"\xff" * round(seconds * SAMPLE_RATE)


def tone_mulaw(seconds: float, hz: float = 220.0, amplitude: int = 8000) -> bytes:
    """A sine tone: stands in for speech in fakes that detect speech by energy."""
    n = round(seconds * SAMPLE_RATE)
    return bytes(
        _ENCODE[int(amplitude * math.sin(2 * math.pi * hz * i / SAMPLE_RATE)) & 0xFFFF]
        for i in range(n)
    )


def seconds_of(data: bytes | int) -> float:
    """Duration of mu-law 8 kHz audio (bytes, or a byte count)."""
    n = data if isinstance(data, int) else len(data)
    return n / SAMPLE_RATE


def frames(data: bytes, size: int = FRAME_BYTES) -> list[bytes]:
    """Cut audio into frames of `size` bytes (the last may be shorter)."""
    return [data[i : i + size] for i in range(0, len(data), size)]

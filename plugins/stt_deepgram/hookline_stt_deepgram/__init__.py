"""Deepgram live speech-to-text for hookline: the `stt` provider "deepgram".

Configure it under `[stt.deepgram]` (see `settings.DeepgramSTTSettings`); the API key is
read from the environment variable named by `api_key_env` (DEEPGRAM_API_KEY).
"""

from __future__ import annotations

from hookline import ProviderSpec, hookimpl

from .client import DeepgramSTT, DeepgramSTTStream
from .settings import DeepgramSTTSettings

__all__ = ["DeepgramSTT", "DeepgramSTTSettings", "DeepgramSTTStream", "hookline_providers"]


@hookimpl
def hookline_providers() -> list[ProviderSpec]:
    return [
        ProviderSpec(
            kind="stt",
            name="deepgram",
            settings=DeepgramSTTSettings,
            create=DeepgramSTT.create,
        )
    ]

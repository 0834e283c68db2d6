"""hookline plugin: Deepgram Aura text-to-speech (`[providers] tts = "deepgram"`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hookline.hookspecs import hookimpl
from hookline.providers import ProviderSpec

from .provider import DeepgramTTS
from .settings import DeepgramTTSSettings

if TYPE_CHECKING:
    from hookline.runtime import Runtime

__all__ = ["DeepgramTTS", "DeepgramTTSSettings"]


def _create(settings: DeepgramTTSSettings, runtime: Runtime) -> DeepgramTTS:
    api_key = runtime.secret(settings.api_key_env, key="tts.deepgram.api_key_env")
    return DeepgramTTS(settings, api_key, thread_limiter=runtime.thread_limiter)


@hookimpl
def hookline_providers() -> list[ProviderSpec]:
    return [ProviderSpec("tts", "deepgram", DeepgramTTSSettings, _create)]

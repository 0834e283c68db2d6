"""hookline plugin: Deepgram Aura text-to-speech (`[providers] tts = "deepgram"`)."""

from __future__ import annotations

from hookline import ProviderContext, ProviderSpec, hookimpl

from .provider import DeepgramTTS
from .settings import DeepgramTTSSettings

__all__ = ["DeepgramTTS", "DeepgramTTSSettings"]


def _create(settings: DeepgramTTSSettings, ctx: ProviderContext) -> DeepgramTTS:
    api_key = ctx.secret(settings.api_key_env, key="api_key_env")
    return DeepgramTTS(settings, api_key, thread_limiter=ctx.thread_limiter)


@hookimpl
def hookline_providers() -> list[ProviderSpec]:
    return [ProviderSpec("tts", "deepgram", DeepgramTTSSettings, _create)]

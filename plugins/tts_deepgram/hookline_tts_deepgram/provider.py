"""The Deepgram `TTS` provider: streaming per call, REST for cached phrases."""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from hookline import AudioFormat, CallInfo

from .rest import synthesize, tls_context
from .settings import DeepgramTTSSettings
from .stream import DeepgramTTSStream, open_stream

__all__ = ["DeepgramTTS"]

log = logging.getLogger("hookline.tts.deepgram")


class DeepgramTTS:
    """One per process. `open()` a stream per call; `synthesize()` whole phrases."""

    def __init__(
        self,
        settings: DeepgramTTSSettings,
        api_key: str,
        *,
        thread_limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        self.settings = settings
        self._api_key = api_key
        self._thread_limiter = thread_limiter
        self._tls: ssl.SSLContext | None = None

    def _check_format(self, fmt: AudioFormat) -> None:
        s = self.settings
        if (fmt.encoding, fmt.sample_rate) != (s.encoding, s.sample_rate):
            log.warning(
                "[tts.deepgram] asks for %s %d Hz but the call needs %s %d Hz; using the call's",
                s.encoding, s.sample_rate, fmt.encoding, fmt.sample_rate,
            )  # fmt: skip

    @asynccontextmanager
    async def open(self, fmt: AudioFormat, call: CallInfo) -> AsyncIterator[DeepgramTTSStream]:
        """Connect at once (warm socket); ProviderAuthError here for a refused key."""
        self._check_format(fmt)
        async with open_stream(self.settings, self._api_key, fmt, call) as stream:
            yield stream

    async def synthesize(self, text: str, fmt: AudioFormat) -> bytes:
        self._check_format(fmt)
        if self._tls is None:
            # Off the trio thread: loading the CA bundle is tens of ms of CPU.
            self._tls = await trio.to_thread.run_sync(tls_context, limiter=self._thread_limiter)
        return await synthesize(self.settings, self._api_key, text, fmt, self._tls)

"""The Deepgram `TTS` provider: streaming per call, REST for cached phrases."""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

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

    async def prepare(self) -> None:
        """Build the TLS context now (`Runtime.start`), before any call."""
        await self._tls_context()

    async def _tls_context(self) -> ssl.SSLContext:
        """The process's one TLS context, for the streaming socket and REST alike. Built
        in a worker thread: loading the CA bundle takes ~25 ms of CPU, which every call
        in flight would otherwise wait out on the trio thread at each connect."""
        if self._tls is None:
            self._tls = await trio.to_thread.run_sync(tls_context, limiter=self._thread_limiter)
        return self._tls

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
        # One context per process (built in a thread): a context per connection would
        # load the CA bundle on the trio thread every time.
        tls = await self._tls_context() if urlsplit(self.settings.url).scheme == "wss" else None
        async with open_stream(self.settings, self._api_key, fmt, call, tls) as stream:
            yield stream

    async def synthesize(self, text: str, fmt: AudioFormat) -> bytes:
        self._check_format(fmt)
        tls = await self._tls_context()
        return await synthesize(self.settings, self._api_key, text, fmt, tls)

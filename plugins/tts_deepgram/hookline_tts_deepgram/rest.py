"""Whole-phrase synthesis through Deepgram's REST `POST /v1/speak`, via deepgram-sdk.

The SDK's async client runs on httpx, which runs under trio; its own retry loop sleeps
with asyncio, so it is turned off (`max_retries=0`) and the core's bounded `retry` runs
each request instead.
"""

from __future__ import annotations

import logging
import ssl
import warnings
from typing import Any
from urllib.parse import urlsplit

import httpx

from hookline import (
    AudioFormat,
    Backoff,
    ProviderError,
    ProviderUnavailable,
    parse_retry_after,
    retry,
)

from .errors import PROVIDER, rejected_error
from .settings import DeepgramTTSSettings

__all__ = ["synthesize", "tls_context"]

log = logging.getLogger("hookline.tts.deepgram")


def _sdk() -> Any:
    """deepgram-sdk, imported on first use: it takes most of a second to import (plugin
    discovery should not pay that) and warns about its asyncio websockets on import."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment
        from deepgram.core.api_error import ApiError

        # `client.speak.v1` is imported lazily by the SDK, websockets warnings and all.
        from deepgram.speak.v1 import client as _speak_v1  # noqa: F401

    return AsyncDeepgramClient, DeepgramClientEnvironment, ApiError


def tls_context() -> ssl.SSLContext:
    """What httpx would build by default (certifi's roots), built once and shared."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def _environment(settings: DeepgramTTSSettings) -> Any:
    ws = urlsplit(settings.url)
    ws_root = f"{ws.scheme}://{ws.netloc}"
    _, environment, _ = _sdk()
    return environment(
        base=settings.base_url.rstrip("/"),
        production=ws_root,
        agent=ws_root,
        agent_rest=settings.base_url.rstrip("/"),
    )


def _detail(body: object) -> str:
    if isinstance(body, dict):
        code, message = body.get("err_code", ""), body.get("err_msg", "")
        return f"{code}: {message}" if code else str(message or body)
    return str(body or "")


async def _synthesize_once(
    settings: DeepgramTTSSettings,
    api_key: str,
    text: str,
    fmt: AudioFormat,
    tls: ssl.SSLContext,
) -> bytes:
    # A client per request: phrases are synthesized a handful of times per process, and
    # no connection pool outlives the task that made it. `tls` is shared because building
    # one costs ~70 ms of CPU.
    async with httpx.AsyncClient(timeout=settings.request_timeout_s, verify=tls) as http:
        client_class, _, _ = _sdk()
        client = client_class(
            api_key=api_key,
            environment=_environment(settings),
            max_retries=0,
            httpx_client=http,
        )
        chunks = [
            chunk
            async for chunk in client.speak.v1.audio.generate(
                text=text,
                model=settings.model,
                encoding=fmt.encoding,  # type: ignore[arg-type]
                sample_rate=fmt.sample_rate,
                container="none",  # raw audio, no WAV header
                speed=settings.speed,
            )
        ]
    return b"".join(chunks)


async def synthesize(
    settings: DeepgramTTSSettings,
    api_key: str,
    text: str,
    fmt: AudioFormat,
    tls: ssl.SSLContext,
) -> bytes:
    """The whole phrase as audio; retries 429/5xx/network errors up to `max_retries`."""
    if not text.strip():
        raise ProviderError("nothing to synthesize: the text is empty", provider=PROVIDER)
    _, _, api_error = _sdk()

    async def attempt() -> bytes:
        try:
            return await _synthesize_once(settings, api_key, text, fmt, tls)
        except api_error as e:
            raise rejected_error(
                e.status_code or 0,
                _detail(e.body),
                settings.api_key_env,
                parse_retry_after((e.headers or {}).get("retry-after")),
            ) from None
        except httpx.HTTPError as e:
            raise ProviderUnavailable(
                f"REST synthesis at {settings.base_url} failed: {e!r}", provider=PROVIDER
            ) from None

    backoff = Backoff(
        first_s=settings.retry_base_s,
        max_s=settings.retry_max_s,
        attempts=max(0, settings.max_retries) + 1,
    )
    return await retry(attempt, backoff, what="REST synthesis", log=log)

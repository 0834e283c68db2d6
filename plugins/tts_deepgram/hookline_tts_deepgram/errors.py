"""Deepgram's refusals in hookline's error vocabulary."""

from __future__ import annotations

from hookline import ProviderAuthError, ProviderError, ProviderUnavailable

__all__ = ["PROVIDER", "rejected_error"]

PROVIDER = "tts/deepgram"


def rejected_error(status: int, body: bytes | str | None, env: str) -> ProviderError:
    """Deepgram refused a request: auth problems name the env var holding the key."""
    detail = body.decode(errors="replace") if isinstance(body, bytes) else (body or "")
    detail = detail.strip()[:300]
    if status in (401, 403):
        return ProviderAuthError(
            f"Deepgram refused the API key from environment variable {env} "
            f"(HTTP {status}: {detail or 'no detail'}); check that {env} holds a valid key",
            provider=PROVIDER,
        )
    if status == 429 or status >= 500:
        return ProviderUnavailable(f"Deepgram answered HTTP {status}: {detail}", provider=PROVIDER)
    return ProviderError(
        f"Deepgram rejected the request with HTTP {status}: {detail} "
        "(check [tts.deepgram] model and audio settings)",
        provider=PROVIDER,
    )

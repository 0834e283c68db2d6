"""Deepgram's refusals in hookline's error vocabulary."""

from __future__ import annotations

from hookline import ProviderError, error_for_status

__all__ = ["PROVIDER", "rejected_error"]

PROVIDER = "tts/deepgram"


def rejected_error(
    status: int, body: bytes | str | None, env: str, retry_after: float | None = None
) -> ProviderError:
    """Deepgram refused a request: auth problems name the env var holding the key."""
    detail = body.decode(errors="replace") if isinstance(body, bytes) else (body or "")
    detail = detail.strip()[:300]
    return error_for_status(
        status,
        f"Deepgram answered HTTP {status}: {detail or 'no detail'}",
        provider=PROVIDER,
        retry_after=retry_after,
        auth_hint=f"the API key from environment variable {env} was refused; "
        f"check that {env} holds a valid key",
        refused_hint="check [tts.deepgram] model and audio settings",
    )

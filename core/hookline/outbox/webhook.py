"""The signed webhook channel: `[notifications.webhook]`, for the shop's own systems.

Each notification is POSTed as JSON to the configured URL with three headers:

- `X-Hookline-Id`: the notification id (the same on every retry: drop repeats);
- `X-Hookline-Timestamp`: UNIX seconds when this attempt was signed;
- `X-Hookline-Signature`: `v1=` + hex HMAC-SHA256 over `timestamp + "." + body`, keyed
  with the secret from the environment variable `secret_env`.

A receiver recomputes the HMAC over the raw body, compares in constant time, refuses a
timestamp older (or newer) than its window (`TOLERANCE_S` by default), and remembers the
ids it saw within that window: a captured request replayed later is refused by the
timestamp, one replayed at once by the id. `verify_signature` below does the first two;
docs/notifications.md has a copyable version.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Annotated, Any

import httpx
import msgspec

from ..config import Seconds
from ..context import ProviderContext
from ..errors import ProviderUnavailable, error_for_status
from ..hookspecs import hookimpl
from .channel import ChannelSpec
from .store import Notification

__all__ = [
    "ID_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "TOLERANCE_S",
    "WebhookChannel",
    "WebhookSettings",
    "hookline_notification_channels",
    "sign",
    "verify_signature",
]

ID_HEADER = "X-Hookline-Id"
TIMESTAMP_HEADER = "X-Hookline-Timestamp"
SIGNATURE_HEADER = "X-Hookline-Signature"
TOLERANCE_S = 300  # the replay window a receiver should allow (clock skew included)
PROVIDER = "notifications/webhook"

HttpUrl = Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s]+$")]


class WebhookSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`url`: where to POST; `secret_env`: the environment variable holding the signing
    secret (shared with the receiver); `timeout_s`: bound on one request."""

    url: HttpUrl
    secret_env: str = "HOOKLINE_WEBHOOK_SECRET"
    timeout_s: Seconds = 10.0


class _Body(msgspec.Struct):
    id: str
    kind: str
    to: str
    text: str
    payload: dict[str, Any]
    call_id: str
    created: str


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp` (UNIX seconds)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float | None = None,
    tolerance_s: float = TOLERANCE_S,
) -> bool:
    """Whether `signature` signs `body` at `timestamp`, and that timestamp is within
    `tolerance_s` of `now` (a replay of an old request is refused)."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookChannel:
    def __init__(self, settings: WebhookSettings, secret: str) -> None:
        self.url = settings.url
        self._secret = secret
        self._client = httpx.AsyncClient(timeout=settings.timeout_s)

    @classmethod
    def create(cls, settings: WebhookSettings, ctx: ProviderContext) -> WebhookChannel:
        channel = cls(settings, ctx.secret(settings.secret_env, key="secret_env"))
        ctx.on_close(channel.aclose)
        return channel

    async def send(self, notification: Notification) -> None:
        n = notification
        created = n.created.isoformat() if n.created else ""
        body = msgspec.json.encode(_Body(n.id, n.kind, n.to, n.body, n.payload, n.call_id, created))
        timestamp = str(int(time.time()))
        headers = {
            "content-type": "application/json",
            ID_HEADER: n.id,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
        }
        try:
            response = await self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as e:
            raise ProviderUnavailable(f"POST {self.url}: {e!r}", provider=PROVIDER) from None
        if response.is_success:
            return
        raise error_for_status(
            response.status_code,
            f"POST {self.url}: HTTP {response.status_code}",
            provider=PROVIDER,
            retry_after=_retry_after(response),
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def _retry_after(response: httpx.Response) -> float | None:
    from ..retry import parse_retry_after

    return parse_retry_after(response.headers.get("retry-after"))


@hookimpl
def hookline_notification_channels() -> list[ChannelSpec]:
    return [
        ChannelSpec(
            name="webhook",
            settings=WebhookSettings,
            create=WebhookChannel.create,
            description="POST signed JSON to the shop's systems",
        )
    ]

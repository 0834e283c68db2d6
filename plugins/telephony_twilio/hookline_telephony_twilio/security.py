"""Who may talk to us: X-Twilio-Signature checks and the per-call stream tokens.

The signed URL is rebuilt from `public_url` when it is set (the deployer knows the
address Twilio was given); otherwise from X-Forwarded-Proto/Host (a TLS-terminating
proxy in front), else the Host header and the scheme the request came in on.
WebSocket URLs use ws/wss, and their query parameters are signed as params, not as
part of the URL, the way Twilio's own libraries check the upgrade (protocols.md §1.7).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import trio
from twilio.request_validator import (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)

from hookline.providers import CallInfo

__all__ = ["FormParams", "PendingCall", "Signer", "TokenBook", "headers_of", "request_url"]

_WS_SCHEME = {"https": "wss", "http": "ws", "wss": "wss", "ws": "ws"}
_HTTP_SCHEME = {"wss": "https", "ws": "http", "https": "https", "http": "http"}


class FormParams(dict[str, list[str]]):
    """A form body with repeated keys; `getall` is what RequestValidator looks for."""

    def getall(self, name: str) -> list[str]:
        return self[name]

    def first(self, name: str, default: str = "") -> str:
        values = self.get(name)
        return values[0] if values else default

    @classmethod
    def parse(cls, body: bytes) -> FormParams:
        return cls(parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True))


def headers_of(scope: Mapping) -> dict[str, str]:
    """ASGI headers as a dict with lower-case names (the last value wins)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def request_url(scope: Mapping, public_url: str, *, websocket: bool) -> str:
    """The URL Twilio requested, as it signed it (without the query string)."""
    if public_url:
        parts = urlsplit(public_url)
        scheme, host = parts.scheme, parts.netloc
        prefix = parts.path.rstrip("/")
    else:
        headers = headers_of(scope)
        scheme = headers.get("x-forwarded-proto", "").split(",")[0].strip() or scope["scheme"]
        host = headers.get("x-forwarded-host", "").split(",")[0].strip() or headers.get("host", "")
        prefix = ""
    table = _WS_SCHEME if websocket else _HTTP_SCHEME
    scheme = table.get(scheme.lower(), scheme)
    return f"{scheme}://{host}{prefix}{scope['path']}"


class Signer:
    """Checks X-Twilio-Signature with twilio's RequestValidator."""

    def __init__(self, auth_token: str, public_url: str) -> None:
        self._validator = RequestValidator(auth_token)
        self.public_url = public_url

    def check_webhook(self, scope: Mapping, form: FormParams) -> bool:
        url = request_url(scope, self.public_url, websocket=False)
        query = scope.get("query_string", b"").decode("latin-1")
        if query:
            url = f"{url}?{query}"
        return self._check(scope, url, form)

    def check_upgrade(self, scope: Mapping) -> bool:
        url = request_url(scope, self.public_url, websocket=True)
        query = FormParams.parse(scope.get("query_string", b""))
        return self._check(scope, url, query)

    def _check(self, scope: Mapping, url: str, params: FormParams) -> bool:
        headers = headers_of(scope)
        signature = headers.get(SIGNATURE_HEADER.lower())
        if not signature:
            return False
        algorithm = get_signature_algorithm(headers.get(SIGNATURE_SETTINGS_HEADER.lower()))
        return self._validator.validate(url, params, signature, algorithm)


@dataclass
class PendingCall:
    """A call admitted at the webhook whose media stream has not started yet."""

    info: CallInfo
    expires: float
    claimed: trio.Event = field(default_factory=trio.Event)


class TokenBook:
    """Per-call stream tokens: issued at the webhook, claimed once by the media stream."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._pending: dict[str, PendingCall] = {}

    def issue(self, info: CallInfo) -> tuple[str, PendingCall]:
        token = secrets.token_urlsafe(24)
        pending = PendingCall(info=info, expires=trio.current_time() + self.ttl)
        self._pending[token] = pending
        return token, pending

    def claim(self, token: str, call_sid: str) -> PendingCall | None:
        """The pending call for `token` if valid now, for this call; it is then spent."""
        pending = self._pending.get(token)
        if pending is None or pending.claimed.is_set():
            return None
        if trio.current_time() > pending.expires:
            return None
        if pending.info.provider_call_id and pending.info.provider_call_id != call_sid:
            return None
        del self._pending[token]
        pending.claimed.set()
        return pending

    def forget(self, token: str) -> None:
        self._pending.pop(token, None)

"""Who may talk to us: X-Twilio-Signature checks and the per-call stream tokens.

The signed URL is rebuilt from `public_url` when it is set (the deployer knows the
address Twilio was given); otherwise from X-Forwarded-Proto/Host (a TLS-terminating
proxy in front), else the Host header and the scheme the request came in on.
WebSocket URLs use ws/wss, and their query parameters are signed as params, not as
part of the URL, the way Twilio's own libraries check the upgrade (protocols.md §1.7).
"""

from __future__ import annotations

import logging
import math
import secrets
from collections import Counter, OrderedDict
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

from hookline import CallInfo

__all__ = [
    "CallSidBook",
    "FormParams",
    "PendingCall",
    "RateLimitedLog",
    "Signer",
    "TokenBook",
    "headers_of",
    "request_url",
]

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
    settled: trio.Event = field(default_factory=trio.Event)  # claimed, or given up
    claimed: bool = False


class TokenBook:
    """Per-call stream tokens: issued at the webhook, settled once.

    A token is settled when a stream claims it, when a stream presents it for another
    call (the token holder had its one try), when Twilio reports that call's stream
    failed, or when the webhook stops waiting; whoever waits on `settled` then knows
    whether the reserved slot went to a stream (`claimed`) or must be given back.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._pending: dict[str, PendingCall] = {}
        self._by_call: dict[str, str] = {}  # CallSid -> its pending token

    def issue(self, info: CallInfo) -> tuple[str, PendingCall]:
        token = secrets.token_urlsafe(24)
        pending = PendingCall(info=info, expires=trio.current_time() + self.ttl)
        self._pending[token] = pending
        self._by_call[info.provider_call_id] = token
        return token, pending

    def claim(self, token: str, call_sid: str) -> PendingCall | None:
        """The pending call for `token` if valid now and for this call; it is then spent.

        A valid token presented with another CallSid is spent too (and None returned):
        Twilio opens one stream per call, so that stream was the call's only one.
        """
        pending = self._pending.get(token)
        if pending is None:
            return None
        ok = trio.current_time() <= pending.expires and pending.info.provider_call_id == call_sid
        self._settle(token, claimed=ok)
        return pending if ok else None

    def give_up(self, call_sid: str) -> bool:
        """Twilio said the stream of `call_sid` failed: no stream will claim its token."""
        token = self._by_call.get(call_sid)
        if token is None:
            return False
        self._settle(token, claimed=False)
        return True

    def forget(self, token: str) -> None:
        self._settle(token, claimed=False)

    def _settle(self, token: str, *, claimed: bool) -> None:
        pending = self._pending.pop(token, None)
        if pending is None:
            return
        self._by_call.pop(pending.info.provider_call_id, None)
        pending.claimed = claimed
        pending.settled.set()


class CallSidBook:
    """The CallSids whose webhook was answered, remembered for `window_s` seconds.

    Twilio's signature has no timestamp, so a captured webhook stays validly signed for
    ever; what makes a replay recognisable is its CallSid, which Twilio never reuses.
    Memory is bounded: beyond `max_entries` the oldest are forgotten early (and counted
    in `evicted`). Entries are kept in arrival order, which is also expiry order.
    """

    def __init__(self, window_s: float, max_entries: int) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        self.evicted = 0  # forgotten before their window ended, for lack of room
        self._expires: OrderedDict[str, float] = OrderedDict()
        self._replays: Counter[str] = Counter()  # only CallSids that were replayed

    def __len__(self) -> int:
        return len(self._expires)

    def seen_before(self, call_sid: str) -> int:
        """How often `call_sid` came before, within the window (0: first time; then
        it is remembered)."""
        now = trio.current_time()
        self._prune(now)
        if call_sid in self._expires:
            self._replays[call_sid] += 1
            return self._replays[call_sid]
        self._expires[call_sid] = now + self.window_s
        while len(self._expires) > self.max_entries:
            self._drop_oldest()
            self.evicted += 1
        return 0

    def _prune(self, now: float) -> None:
        while self._expires and next(iter(self._expires.values())) < now:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        sid, _ = self._expires.popitem(last=False)
        self._replays.pop(sid, None)


class RateLimitedLog:
    """One warning per `interval_s` for a flood of the same refusal, with its count:
    a log line per unsigned request would let anyone fill the disk."""

    def __init__(self, log: logging.Logger | logging.LoggerAdapter, interval_s: float = 60.0):
        self._log = log
        self.interval_s = interval_s
        self._next: dict[str, float] = {}
        self._since: Counter[str] = Counter()

    def warning(self, message: str, *args: object) -> None:
        now = trio.current_time()
        self._since[message] += 1
        if now < self._next.get(message, -math.inf):
            return
        self._next[message] = now + self.interval_s
        count, self._since[message] = self._since[message], 0
        suffix = f" [{count} in the last {self.interval_s:.0f} s]" if count > 1 else ""
        self._log.warning(message + suffix, *args)

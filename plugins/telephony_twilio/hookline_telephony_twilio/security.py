"""Who may talk to us: X-Twilio-Signature checks and the per-call stream tokens.

The signed URL is rebuilt from `public_url` when it is set (the deployer knows the
address Twilio was given); otherwise from X-Forwarded-Proto/Host (a TLS-terminating
proxy in front), else the Host header and the scheme the request came in on.
WebSocket URLs use ws/wss, and their query parameters are signed as params, not as
part of the URL, the way Twilio's own libraries check the upgrade (protocols.md §1.7).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import math
import struct
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
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
    "StreamClaim",
    "TokenBook",
    "headers_of",
    "request_url",
    "stream_token_key",
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


@dataclass(frozen=True)
class StreamClaim:
    """A stream whose token verified: the call it belongs to, and whether this process
    already holds its call slot (its webhook was answered here) or must admit it now."""

    info: CallInfo
    slot_reserved: bool


_TOKEN_VERSION = 1
_MAC_BYTES = 16  # HMAC-SHA256 truncated to 128 bits (as RFC 4868 does for IPsec)
_HEADER = struct.Struct(">BQB")  # version, expiry (Unix ms), length of the call id
_KEY_LABEL = b"hookline/twilio stream token key v1"
_MAC_LABEL = b"hookline/twilio stream token v1"


def stream_token_key(secret: str) -> bytes:
    """The token MAC key derived from a shared secret (the configured stream key, or the
    Twilio auth token). Domain-separated: a token's MAC is never computed with the key
    Twilio signs requests with, so neither can stand in for the other."""
    return hmac.new(secret.encode("utf-8"), _KEY_LABEL, hashlib.sha256).digest()


class TokenBook:
    """Per-call stream tokens: self-verifying, so any replica sharing the key accepts them.

    A token is `base64url(version, expiry, call id, MAC)`, the MAC an HMAC-SHA256 over
    (call id, CallSid, expiry, the stream's from/to parameters). Verifying needs only
    the key: the stream may reach another process than the webhook did. Replay is bound
    by the expiry (wall clock, `ttl` seconds: replicas need synchronised clocks, as NTP
    gives), by the CallSid (the stream's `start` must carry the one the token was
    issued for) and, in each process, by the memory of the tokens spent there.

    The process that answered the webhook also holds a reserved call slot per token
    (`PendingCall`), settled once: when a stream claims the token here, when a stream
    presents it for another call (the token holder had its one try), when Twilio
    reports that call's stream failed, or when the webhook stops waiting; whoever waits
    on `settled` then knows whether the slot went to a stream (`claimed`) or must be
    given back. A stream claimed in another process admits there (`slot_reserved`
    False); the slot here is given back when the token expires.
    """

    def __init__(
        self,
        ttl: float,
        key: bytes,
        *,
        clock: Callable[[], float] = time.time,
        max_spent: int = 100_000,
    ) -> None:
        self.ttl = ttl
        self._key = key
        self._clock = clock  # wall clock: expiries are compared across machines
        self._pending: dict[str, PendingCall] = {}
        self._by_call: dict[str, str] = {}  # CallSid -> its pending token
        # The MACs of tokens spent here -> their expiry (ms), roughly in expiry order.
        # Keyed by MAC, not by text: base64 has more than one spelling of the same bytes.
        self._spent: OrderedDict[bytes, int] = OrderedDict()
        self._max_spent = max_spent

    def issue(self, info: CallInfo) -> tuple[str, PendingCall]:
        expiry_ms = math.ceil((self._clock() + self.ttl) * 1000)
        call_id = info.call_id.encode("utf-8")[:255]
        header = _HEADER.pack(_TOKEN_VERSION, expiry_ms, len(call_id)) + call_id
        mac = self._mac(header, info.provider_call_id, info.from_number, info.to_number)
        token = base64.urlsafe_b64encode(header + mac).rstrip(b"=").decode("ascii")
        pending = PendingCall(info=info, expires=trio.current_time() + self.ttl)
        self._pending[token] = pending
        self._by_call[info.provider_call_id] = token
        return token, pending

    def claim(self, token: str, call_sid: str, parameters: Mapping[str, str]) -> StreamClaim | None:
        """The call `token` admits, if it verifies now for this CallSid and the stream's
        from/to `parameters`; it is then spent in this process.

        A token issued here and presented with another CallSid is spent too (and None
        returned): Twilio opens one stream per call, so that stream was the call's only one.
        """
        now_ms = self._clock() * 1000
        self._prune_spent(now_ms)
        if self._is_spent(token):
            return None
        call_id = self._verify(token, call_sid, parameters, now_ms)
        pending = self._pending.get(token)
        if pending is not None:
            ok = call_id is not None and trio.current_time() <= pending.expires
            self._settle(token, claimed=ok)
            return StreamClaim(pending.info, slot_reserved=True) if ok else None
        if call_id is None:
            return None
        self._remember_spent(token)
        info = CallInfo(
            call_id=call_id,
            provider_call_id=call_sid,
            from_number=parameters.get("from", ""),
            to_number=parameters.get("to", ""),
        )
        return StreamClaim(info, slot_reserved=False)

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
        self._remember_spent(token)
        self._by_call.pop(pending.info.provider_call_id, None)
        pending.claimed = claimed
        pending.settled.set()

    def _verify(
        self, token: str, call_sid: str, parameters: Mapping[str, str], now_ms: float
    ) -> str | None:
        """The token's call id if its MAC is ours for these values and it has not expired."""
        parts = _decode(token)
        if parts is None:
            return None
        header, mac, expiry_ms = parts
        expected = self._mac(header, call_sid, parameters.get("from", ""), parameters.get("to", ""))
        if not hmac.compare_digest(mac, expected) or now_ms > expiry_ms:
            return None
        return header[_HEADER.size :].decode("utf-8", "replace")

    def _mac(self, header: bytes, call_sid: str, from_number: str, to_number: str) -> bytes:
        message = hmac.new(self._key, _MAC_LABEL, hashlib.sha256)
        message.update(header)  # version, expiry and call id
        for value in (call_sid, from_number, to_number):
            data = value.encode("utf-8")
            message.update(struct.pack(">I", len(data)) + data)  # unambiguous boundaries
        return message.digest()[:_MAC_BYTES]

    def _remember_spent(self, token: str) -> None:
        parts = _decode(token)
        if parts is None:
            return
        _, mac, expiry_ms = parts
        self._spent[mac] = expiry_ms
        while len(self._spent) > self._max_spent:
            self._spent.popitem(last=False)

    def _is_spent(self, token: str) -> bool:
        parts = _decode(token)
        return parts is not None and parts[1] in self._spent

    def _prune_spent(self, now_ms: float) -> None:
        # Past its expiry a token fails verification anyway: no need to remember it.
        while self._spent and next(iter(self._spent.values())) < now_ms:
            self._spent.popitem(last=False)


def _decode(token: str) -> tuple[bytes, bytes, int] | None:
    """(header, MAC, expiry in Unix ms) of a well-formed token, else None."""
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        version, expiry_ms, id_len = _HEADER.unpack_from(raw)
    except (binascii.Error, ValueError, struct.error):
        return None
    split = _HEADER.size + id_len
    if version != _TOKEN_VERSION or len(raw) != split + _MAC_BYTES:
        return None
    return raw[:split], raw[split:], expiry_ms


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

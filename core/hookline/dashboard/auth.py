"""Who may look: password hashes, the signed session cookie, CSRF tokens, sign-in limits.

The session is a cookie signed with itsdangerous (HttpOnly, SameSite=Strict, Secure when
the request came over https), holding the user and a CSRF token; it expires after
`[dashboard] session_hours`. Every state-changing POST must carry that token in a form
field (`csrf`). Failed sign-ins are counted per client address; past
`[dashboard] login_attempts` in five minutes the sign-in form answers 429.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass, field

from itsdangerous import BadSignature, URLSafeTimedSerializer

__all__ = [
    "COOKIE",
    "LoginLimiter",
    "Session",
    "SessionCodec",
    "hash_password",
    "verify_password",
]

COOKIE = "hookline_admin"
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}  # ~16 MB and ~50 ms: slow for guessing, fine once
LIMIT_WINDOW_S = 300.0


def hash_password(password: str) -> str:
    """`scrypt$n$r$p$salt$hash` (base64), for `[dashboard] password_hash_env`."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    b64 = base64.urlsafe_b64encode
    n, r, p = _SCRYPT["n"], _SCRYPT["r"], _SCRYPT["p"]
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """True when `password` matches; a malformed hash matches nothing."""
    try:
        scheme, n, r, p, salt, digest = encoded.strip().split("$")
        if scheme != "scrypt":
            return False
        expected = base64.urlsafe_b64decode(digest)
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.urlsafe_b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=2**26,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def looks_like_hash(encoded: str) -> bool:
    parts = encoded.strip().split("$")
    return len(parts) == 6 and parts[0] == "scrypt"


@dataclass
class Session:
    user: str = ""  # "" until signed in
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    @property
    def signed_in(self) -> bool:
        return bool(self.user)


class SessionCodec:
    """Session <-> cookie value. A forged, stale or malformed cookie is no session."""

    def __init__(self, secret: bytes, max_age_s: float) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="hookline-dashboard")
        self.max_age_s = max_age_s

    def dumps(self, session: Session) -> str:
        return self._serializer.dumps({"u": session.user, "c": session.csrf})

    def loads(self, value: str | None) -> Session | None:
        if not value:
            return None
        try:
            data = self._serializer.loads(value, max_age=self.max_age_s)
        except BadSignature:
            return None
        if not isinstance(data, dict):
            return None
        user, csrf = data.get("u"), data.get("c")
        if not isinstance(user, str) or not isinstance(csrf, str) or not csrf:
            return None
        return Session(user=user, csrf=csrf)


def csrf_ok(session: Session | None, token: str | None) -> bool:
    return bool(session and token and hmac.compare_digest(session.csrf, token))


class LoginLimiter:
    """Failed sign-ins per client in a sliding window (memory bounded by `max_clients`)."""

    def __init__(self, attempts: int, window_s: float = LIMIT_WINDOW_S, max_clients=10_000):
        self.attempts = attempts
        self.window_s = window_s
        self.max_clients = max_clients
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, client: str, now: float) -> deque[float]:
        failures = self._failures.get(client)
        if failures is None:
            return deque()
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        if not failures:
            del self._failures[client]
        return failures

    def blocked(self, client: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return len(self._recent(client, now)) >= self.attempts

    def failed(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if client not in self._failures and len(self._failures) >= self.max_clients:
            self._failures.pop(next(iter(self._failures)))  # the oldest client
        self._failures.setdefault(client, deque()).append(now)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)

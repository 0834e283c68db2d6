"""A loopback Google Calendar API v3 server with its OAuth token endpoint (protocols.md §6).

Real HTTP (Hypercorn's trio worker) so google-api-python-client and google-auth run
unchanged against it, with `api_endpoint = fake.api_endpoint` and
`token_uri = fake.token_uri`:

    async with fake_google_calendar() as fake:
        fake.fail(429, retry_after=0)     # the next API request is rate limited
        fake.revoke_tokens()              # the next API request gets 401 (refresh needed)
        ...
        fake.requests                     # every request received, in order

What it serves: `POST /token` (refresh-token, service-account JWT and the installed-app
flow's authorization-code grants: `auth_code` is the one code it takes, answered with
`refresh_token`; `code_exchanges` records each exchange's form),
`POST /calendar/v3/freeBusy`, and under `/calendar/v3/calendars/{calendarId}/events`:
list (timeMin/timeMax/privateExtendedProperty/sharedExtendedProperty/q/showDeleted,
singleEvents/orderBy, maxResults/pageToken), insert (client ids in base32hex; 409 on a
duplicate, deleted ids stay reserved as in Google), get (deleted events come back with
status "cancelled"), patch (nested objects merge, arrays replace, If-Match -> 412) and
delete (204, then 410). Errors have Google's `{"error": {"errors": [...], ...}}` shape.
Recurring events are not expanded.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import itertools
import random
import re
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

import msgspec
import trio
from msgspec import UNSET, UnsetType

__all__ = ["FakeGoogleCalendar", "Fault", "LoggedRequest", "fake_google_calendar"]

UTC = dt.UTC
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
_ID = re.compile(r"^[a-v0-9]{5,1024}$")


# ------------------------------------------------------------------ wire messages


class EventDateTime(msgspec.Struct, omit_defaults=True):
    date: str | UnsetType = UNSET
    dateTime: str | UnsetType = UNSET
    timeZone: str | UnsetType = UNSET


class ExtendedProperties(msgspec.Struct, omit_defaults=True):
    private: dict[str, str] | UnsetType = UNSET
    shared: dict[str, str] | UnsetType = UNSET


class EventBody(msgspec.Struct, omit_defaults=True):
    """The writable part of an Event (insert and patch bodies); unknown fields ignored."""

    id: str | UnsetType = UNSET
    status: str | UnsetType = UNSET
    summary: str | UnsetType = UNSET
    description: str | UnsetType = UNSET
    location: str | UnsetType = UNSET
    colorId: str | UnsetType = UNSET
    start: EventDateTime | UnsetType = UNSET
    end: EventDateTime | UnsetType = UNSET
    transparency: str | UnsetType = UNSET
    visibility: str | UnsetType = UNSET
    attendees: list[dict[str, Any]] | UnsetType = UNSET
    extendedProperties: ExtendedProperties | UnsetType = UNSET
    reminders: dict[str, Any] | UnsetType = UNSET
    recurrence: list[str] | UnsetType = UNSET
    source: dict[str, str] | UnsetType = UNSET


class FreeBusyItem(msgspec.Struct):
    id: str


class FreeBusyRequest(msgspec.Struct):
    timeMin: str
    timeMax: str
    items: list[FreeBusyItem] = []
    timeZone: str = "UTC"
    groupExpansionMax: int | None = None
    calendarExpansionMax: int | None = None


class JwtClaims(msgspec.Struct):
    iss: str
    aud: str
    exp: int
    iat: int
    scope: str = ""


_event_body = msgspec.json.Decoder(EventBody)
_freebusy = msgspec.json.Decoder(FreeBusyRequest)
_claims = msgspec.json.Decoder(JwtClaims)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        domain: str = "global",
        location: str | None = None,
        location_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status, self.reason, self.message = status, reason, message
        self.domain, self.location, self.location_type = domain, location, location_type
        self.headers = headers or {}
        super().__init__(f"{status} {reason}: {message}")

    def body(self) -> dict[str, Any]:
        detail: dict[str, Any] = {
            "domain": self.domain,
            "reason": self.reason,
            "message": self.message,
        }
        if self.location:
            detail["locationType"] = self.location_type or "parameter"
            detail["location"] = self.location
        return {"error": {"errors": [detail], "code": self.status, "message": self.message}}


# Canned errors, as Google words them.
def _auth_error() -> ApiError:
    return ApiError(
        401,
        "authError",
        "Invalid Credentials",
        location="Authorization",
        location_type="header",
        headers={"www-authenticate": 'Bearer realm="https://accounts.google.com/"'},
    )


_CANNED = {
    401: ("authError", "Invalid Credentials", "global"),
    403: ("rateLimitExceeded", "Rate Limit Exceeded", "usageLimits"),
    404: ("notFound", "Not Found", "global"),
    409: ("duplicate", "The requested identifier already exists.", "global"),
    410: ("deleted", "Resource has been deleted", "global"),
    412: ("conditionNotMet", "Precondition Failed", "global"),
    429: ("rateLimitExceeded", "Rate Limit Exceeded", "usageLimits"),
    500: ("backendError", "Backend Error", "global"),
    503: ("backendError", "Backend Error", "global"),
}


# ------------------------------------------------------------------ the fake


@dataclass
class Fault:
    """One injected failure for the next matching API request (not /token)."""

    status: int
    reason: str | None = None
    retry_after: float | None = None
    method: str | None = None  # only requests with this method
    path_contains: str | None = None


@dataclass
class LoggedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    status: int = 0


@dataclass
class FakeGoogleCalendar:
    client_id: str = "test-client-id"
    client_secret: str = "test-client-secret"
    refresh_token: str = "test-refresh-token"
    auth_code: str = "test-auth-code"  # what the consent screen would have redirected with
    code_exchanges: list[dict[str, str]] = field(default_factory=list)
    time_zone: str = "UTC"
    calendars: set[str] = field(default_factory=lambda: {"primary"})
    # Service accounts: email -> PEM public key (the JWT signature is checked).
    service_accounts: dict[str, bytes] = field(default_factory=dict)
    token_lifetime_s: int = 3599
    # Seconds every API answer waits (before touching the calendar): makes races real.
    latency_s: float = 0.0
    # Plus a random 0..latency_jitter_s per request (seeded), so racing requests overtake.
    latency_jitter_s: float = 0.0
    jitter: random.Random = field(default_factory=lambda: random.Random(0))
    page_size_cap: int = 2500  # lower it to make paging observable
    url: str = ""
    events: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    requests: list[LoggedRequest] = field(default_factory=list)
    faults: deque[Fault] = field(default_factory=deque)
    tokens_issued: int = 0
    _valid_tokens: set[str] = field(default_factory=set)
    _last_stamp: dt.datetime = field(default=dt.datetime.min.replace(tzinfo=UTC))
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    # -------------------------------------------------------------- test controls

    @property
    def api_endpoint(self) -> str:
        return f"{self.url}/calendar/v3/"

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def fail(
        self,
        status: int,
        *,
        count: int = 1,
        reason: str | None = None,
        retry_after: float | None = None,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Answer the next `count` matching API requests with this error."""
        for _ in range(count):
            self.faults.append(Fault(status, reason, retry_after, method, path_contains))

    def revoke_tokens(self) -> None:
        """Invalidate every access token issued so far: the next API call gets 401."""
        self._valid_tokens.clear()

    def api_requests(self, method: str | None = None) -> list[LoggedRequest]:
        return [
            r
            for r in self.requests
            if r.path.startswith("/calendar/") and (method is None or r.method == method)
        ]

    def live_events(self, calendar_id: str = "primary") -> list[dict[str, Any]]:
        return [e for e in self.events.get(calendar_id, {}).values() if e["status"] != "cancelled"]

    def add_event(self, calendar_id: str = "primary", **body: Any) -> dict[str, Any]:
        """Put an event on the calendar directly (as if the shop typed it in)."""
        return self._insert(calendar_id, msgspec.convert(body, EventBody))

    # -------------------------------------------------------------- ASGI

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        query = parse_qs(scope["query_string"].decode(), keep_blank_values=True)
        logged = LoggedRequest(scope["method"], scope["path"], query, headers, body)
        self.requests.append(logged)
        extra: dict[str, str] = {}
        if (self.latency_s or self.latency_jitter_s) and scope["path"].startswith("/calendar/"):
            await trio.sleep(self.latency_s + self.jitter.uniform(0, self.latency_jitter_s))
        try:
            status, payload = self._route(scope["method"], scope["path"], query, headers, body)
        except ApiError as e:
            status, payload, extra = e.status, e.body(), e.headers
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as e:
            err = ApiError(400, "badRequest", f"Bad Request: {e}")
            status, payload = 400, err.body()
        logged.status = status
        data = b"" if payload is None else msgspec.json.encode(payload)
        out_headers = [(b"content-type", b"application/json; charset=UTF-8")]
        out_headers += [(k.encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": out_headers})
        await send({"type": "http.response.body", "body": data})

    def _route(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
    ) -> tuple[int, Any]:
        if path == "/token":
            if method != "POST":
                raise ApiError(405, "methodNotAllowed", "Method Not Allowed")
            return self._token(body, headers.get("authorization", ""))
        if not path.startswith("/calendar/v3/"):
            raise ApiError(404, "notFound", "Not Found")
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self._valid_tokens:
            raise _auth_error()
        self._maybe_fault(method, path)
        rest = path[len("/calendar/v3/") :]
        if rest == "freeBusy" and method == "POST":
            return 200, self._freebusy(_freebusy.decode(body))
        m = re.fullmatch(r"calendars/([^/]+)/events(?:/([^/]+))?", rest)
        if not m:
            raise ApiError(404, "notFound", "Not Found")
        calendar_id = unquote(m.group(1))
        if calendar_id not in self.calendars:
            raise ApiError(404, "notFound", "Not Found")
        event_id = unquote(m.group(2)) if m.group(2) else None
        if event_id is None:
            if method == "GET":
                return 200, self._list(calendar_id, query)
            if method == "POST":
                return 200, self._insert(calendar_id, _event_body.decode(body or b"{}"))
        else:
            if method == "GET":
                return 200, self._get(calendar_id, event_id)
            if method in ("PATCH", "PUT"):
                return 200, self._patch(
                    calendar_id, event_id, body or b"{}", headers.get("if-match")
                )
            if method == "DELETE":
                self._delete(calendar_id, event_id)
                return 204, None
        raise ApiError(405, "methodNotAllowed", "Method Not Allowed")

    def _maybe_fault(self, method: str, path: str) -> None:
        for fault in list(self.faults):
            if fault.method and fault.method != method:
                continue
            if fault.path_contains and fault.path_contains not in path:
                continue
            self.faults.remove(fault)
            if fault.status == 401:
                self.revoke_tokens()
                raise _auth_error()
            reason, message, domain = _CANNED.get(fault.status, ("backendError", "Error", "global"))
            headers = {}
            if fault.retry_after is not None:
                headers["retry-after"] = f"{fault.retry_after:g}"
            raise ApiError(
                fault.status, fault.reason or reason, message, domain=domain, headers=headers
            )

    # -------------------------------------------------------------- OAuth

    def _token(self, body: bytes, authorization: str = "") -> tuple[int, Any]:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if authorization.startswith("Basic "):  # client_secret_basic, as Google accepts
            client_id, _, client_secret = (
                base64.b64decode(authorization[6:]).decode().partition(":")
            )
            form.setdefault("client_id", unquote(client_id))
            form.setdefault("client_secret", unquote(client_secret))
        grant = form.get("grant_type")
        if grant == "refresh_token":
            if form.get("client_id") != self.client_id or (
                form.get("client_secret") != self.client_secret
            ):
                return 401, {"error": "invalid_client", "error_description": "Unauthorized"}
            if form.get("refresh_token") != self.refresh_token:
                return 400, {
                    "error": "invalid_grant",
                    "error_description": "Token has been expired or revoked.",
                }
            scope = form.get("scope", "https://www.googleapis.com/auth/calendar")
        elif grant == "authorization_code":
            self.code_exchanges.append(form)
            if form.get("client_id") != self.client_id or (
                form.get("client_secret") != self.client_secret
            ):
                return 401, {"error": "invalid_client", "error_description": "Unauthorized"}
            if form.get("code") != self.auth_code or not form.get("redirect_uri"):
                return 400, {"error": "invalid_grant", "error_description": "Malformed auth code."}
            self.tokens_issued += 1
            token = f"ya29.fake-{self.tokens_issued}"
            self._valid_tokens.add(token)
            return 200, {
                "access_token": token,
                "expires_in": self.token_lifetime_s,
                "refresh_token": self.refresh_token,
                "scope": "https://www.googleapis.com/auth/calendar",
                "token_type": "Bearer",
            }
        elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            scope = self._check_jwt(form.get("assertion", ""))
            if scope is None:
                return 400, {"error": "invalid_grant", "error_description": "Invalid JWT."}
        else:
            return 400, {"error": "unsupported_grant_type", "error_description": "Invalid grant"}
        self.tokens_issued += 1
        token = f"ya29.fake-{self.tokens_issued}"
        self._valid_tokens.add(token)
        return 200, {
            "access_token": token,
            "expires_in": self.token_lifetime_s,
            "token_type": "Bearer",
            "scope": scope,
        }

    def _check_jwt(self, assertion: str) -> str | None:
        try:
            head, payload, signature = assertion.split(".")
            claims = _claims.decode(_b64(payload))
        except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
            return None
        key = self.service_accounts.get(claims.iss)
        # google-auth always names Google's token endpoint as the audience.
        if key is None or claims.aud not in (self.token_uri, GOOGLE_TOKEN_URI):
            return None
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding

        public = serialization.load_pem_public_key(key)
        try:
            public.verify(  # type: ignore[union-attr, call-arg]
                _b64(signature), f"{head}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            return None
        return claims.scope

    # -------------------------------------------------------------- events

    def _stamp(self) -> dt.datetime:
        # Strictly increasing, like a store that orders its writes.
        now = dt.datetime.now(UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        if now <= self._last_stamp:
            now = self._last_stamp + dt.timedelta(milliseconds=1)
        self._last_stamp = now
        return now

    def _insert(self, calendar_id: str, body: EventBody) -> dict[str, Any]:
        store = self.events.setdefault(calendar_id, {})
        if body.id is UNSET:
            event_id = f"fake{next(self._ids):012d}"
        else:
            event_id = body.id
            if not _ID.match(event_id):
                raise ApiError(400, "invalid", "Invalid resource id value.")
            if event_id in store:
                raise ApiError(409, "duplicate", "The requested identifier already exists.")
        if body.start is UNSET or body.end is UNSET:
            raise ApiError(400, "required", "Missing time", location="start")
        start, end = self._span(body.start), self._span(body.end, end=True)
        if end < start:
            raise ApiError(400, "timeRangeEmpty", "The specified time range is empty.",
                           location="end")  # fmt: skip
        stamp = _rfc3339(self._stamp())
        event: dict[str, Any] = msgspec.to_builtins(body)
        event.update(
            kind="calendar#event",
            id=event_id,
            etag=f'"{next(self._ids)}"',
            status=event.get("status", "confirmed"),
            htmlLink=f"https://www.google.com/calendar/event?eid={event_id}",
            created=stamp,
            updated=stamp,
            creator={"email": "agent@example.com"},
            organizer={"email": calendar_id, "self": True},
            iCalUID=f"{event_id}@google.com",
            sequence=0,
        )
        event.setdefault("reminders", {"useDefault": True})
        store[event_id] = event
        return event

    def _event(self, calendar_id: str, event_id: str) -> dict[str, Any]:
        event = self.events.get(calendar_id, {}).get(event_id)
        if event is None:
            raise ApiError(404, "notFound", "Not Found")
        return event

    def _get(self, calendar_id: str, event_id: str) -> dict[str, Any]:
        return self._event(calendar_id, event_id)

    def _patch(
        self, calendar_id: str, event_id: str, body: bytes, if_match: str | None
    ) -> dict[str, Any]:
        event = self._event(calendar_id, event_id)
        if if_match and if_match != event["etag"]:
            raise ApiError(412, "conditionNotMet", "Precondition Failed",
                           location="If-Match", location_type="header")  # fmt: skip
        patch = msgspec.to_builtins(_event_body.decode(body))
        if "id" in patch and patch["id"] != event_id:
            raise ApiError(400, "invalid", "Invalid resource id value.")
        merged = _merge(event, patch)
        start, end = self._span_dict(merged["start"]), self._span_dict(merged["end"], end=True)
        if end < start:
            raise ApiError(400, "timeRangeEmpty", "The specified time range is empty.",
                           location="end")  # fmt: skip
        if patch.get("start") or patch.get("end"):
            merged["sequence"] = event["sequence"] + 1
        merged["etag"] = f'"{next(self._ids)}"'
        merged["updated"] = _rfc3339(self._stamp())
        self.events[calendar_id][event_id] = merged
        return merged

    def _delete(self, calendar_id: str, event_id: str) -> None:
        event = self._event(calendar_id, event_id)
        if event["status"] == "cancelled":
            raise ApiError(410, "deleted", "Resource has been deleted")
        event["status"] = "cancelled"
        event["updated"] = _rfc3339(self._stamp())
        event["etag"] = f'"{next(self._ids)}"'

    def _span(self, when: EventDateTime, *, end: bool = False) -> dt.datetime:
        return self._span_dict(msgspec.to_builtins(when), end=end)

    def _span_dict(self, when: dict[str, Any], *, end: bool = False) -> dt.datetime:
        from zoneinfo import ZoneInfo

        if "dateTime" in when:
            value = dt.datetime.fromisoformat(when["dateTime"])
            if value.tzinfo is None:
                if "timeZone" not in when:
                    raise ApiError(400, "invalid", "Missing time zone definition for start time.")
                value = value.replace(tzinfo=ZoneInfo(when["timeZone"]))
            return value.astimezone(UTC)
        if "date" in when:
            day = dt.date.fromisoformat(when["date"])
            return dt.datetime.combine(day, dt.time(0), tzinfo=ZoneInfo(self.time_zone))
        raise ApiError(400, "required", "Missing time", location="start")

    def _bounds(self, event: dict[str, Any]) -> tuple[dt.datetime, dt.datetime]:
        return self._span_dict(event["start"]), self._span_dict(event["end"], end=True)

    def _list(self, calendar_id: str, query: dict[str, list[str]]) -> dict[str, Any]:
        def one(name: str) -> str | None:
            return query[name][-1] if name in query else None

        time_min = _parse_bound(one("timeMin"), "timeMin")
        time_max = _parse_bound(one("timeMax"), "timeMax")
        if time_min and time_max and time_max <= time_min:
            raise ApiError(400, "timeRangeEmpty", "The specified time range is empty.",
                           location="timeMax")  # fmt: skip
        single = one("singleEvents") == "true"
        order = one("orderBy")
        if order == "startTime" and not single:
            message = "The requested ordering is not available for the particular query."
            raise ApiError(400, "badRequest", message)
        if order not in (None, "startTime", "updated"):
            raise ApiError(
                400, "invalid", f"Invalid value for orderBy: {order}", location="orderBy"
            )
        max_results = int(one("maxResults") or 250)
        if not 1 <= max_results <= 2500:
            raise ApiError(400, "invalid", "Invalid value for maxResults", location="maxResults")
        max_results = min(max_results, self.page_size_cap)
        private = [_kv(p) for p in query.get("privateExtendedProperty", [])]
        shared = [_kv(p) for p in query.get("sharedExtendedProperty", [])]
        show_deleted = one("showDeleted") == "true"
        text = (one("q") or "").lower()
        items = []
        for event in self.events.get(calendar_id, {}).values():
            if event["status"] == "cancelled" and not show_deleted:
                continue
            start, end = self._bounds(event)
            if time_min and end <= time_min:  # exclusive bound on the event's end
                continue
            if time_max and start >= time_max:  # exclusive bound on the event's start
                continue
            props = event.get("extendedProperties", {})
            if any(props.get("private", {}).get(k) != v for k, v in private):
                continue
            if any(props.get("shared", {}).get(k) != v for k, v in shared):
                continue
            if text and not any(
                text in str(event.get(f, "")).lower()
                for f in ("summary", "description", "location")
            ):
                continue
            items.append((start, event))
        if order == "startTime":
            items.sort(key=lambda pair: (pair[0], pair[1]["id"]))
        elif order == "updated":
            items.sort(key=lambda pair: pair[1]["updated"])
        offset = int(one("pageToken") or 0)
        page = [event for _, event in items[offset : offset + max_results]]
        response: dict[str, Any] = {
            "kind": "calendar#events",
            "etag": f'"{len(self.requests)}"',
            "summary": calendar_id,
            "timeZone": self.time_zone,
            "updated": _rfc3339(dt.datetime.now(UTC)),
            "accessRole": "owner",
            "defaultReminders": [],
            "items": page,
        }
        if offset + max_results < len(items):
            response["nextPageToken"] = str(offset + max_results)
        else:
            response["nextSyncToken"] = f"sync-{len(self.requests)}"
        return response

    def _freebusy(self, request: FreeBusyRequest) -> dict[str, Any]:
        lo = _parse_bound(request.timeMin, "timeMin")
        hi = _parse_bound(request.timeMax, "timeMax")
        assert lo and hi
        if hi <= lo:
            raise ApiError(400, "timeRangeEmpty", "The specified time range is empty.",
                           location="timeMax")  # fmt: skip
        calendars: dict[str, Any] = {}
        for item in request.items:
            if item.id not in self.calendars:
                calendars[item.id] = {
                    "busy": [],
                    "errors": [{"domain": "global", "reason": "notFound"}],
                }
                continue
            spans = sorted(
                (max(s, lo), min(e, hi))
                for ev in self.events.get(item.id, {}).values()
                if ev["status"] != "cancelled" and ev.get("transparency") != "transparent"
                for s, e in [self._bounds(ev)]
                if s < hi and e > lo
            )
            merged: list[list[dt.datetime]] = []
            for s, e in spans:
                if merged and s <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], e)
                else:
                    merged.append([s, e])
            calendars[item.id] = {
                "busy": [
                    {"start": _rfc3339(s, ms=False), "end": _rfc3339(e, ms=False)}
                    for s, e in merged
                ]
            }
        return {
            "kind": "calendar#freeBusy",
            "timeMin": _rfc3339(lo),
            "timeMax": _rfc3339(hi),
            "calendars": calendars,
            "groups": {},
        }


# ------------------------------------------------------------------ helpers


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _kv(param: str) -> tuple[str, str]:
    key, sep, value = param.partition("=")
    if not sep:
        raise ApiError(400, "invalid", "Invalid extended property filter",
                       location="privateExtendedProperty")  # fmt: skip
    return key, value


def _parse_bound(text: str | None, name: str) -> dt.datetime | None:
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(400, "badRequest", "Bad Request", location=name) from None
    if value.tzinfo is None:
        raise ApiError(400, "badRequest", "Bad Request", location=name)
    return value.astimezone(UTC)


def _rfc3339(value: dt.datetime, *, ms: bool = True) -> str:
    value = value.astimezone(UTC)
    if ms:
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Patch semantics: objects merge key by key, everything else (arrays too) replaces."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@asynccontextmanager
async def fake_google_calendar(**options: Any) -> AsyncIterator[FakeGoogleCalendar]:
    """Serve a `FakeGoogleCalendar` on 127.0.0.1 (ephemeral port) for the block's length."""
    from hypercorn.config import Config as HyperConfig
    from hypercorn.trio import serve

    fake = FakeGoogleCalendar(**options)
    config = HyperConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.1
    shutdown = trio.Event()

    async def trigger() -> None:
        await shutdown.wait()

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            lambda task_status: serve(
                fake, config, shutdown_trigger=trigger, task_status=task_status
            )
        )
        fake.url = binds[0].rstrip("/")
        try:
            yield fake
        finally:
            shutdown.set()

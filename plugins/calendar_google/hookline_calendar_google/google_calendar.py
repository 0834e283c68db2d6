"""The Google Calendar backend: google-api-python-client (blocking, httplib2) run in trio
worker threads behind the runtime's capacity limiter.

Each booking is one event; what the agent needs back (phone, service, bay, call id...)
rides in the event's private extended properties. Errors become hookline's provider
errors: 401 refreshes the token and retries once (google-auth-httplib2 does it),
403 rate limits and 429 back off a bounded number of times (honouring Retry-After),
anything else fails the call at once.
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import trio

from hookline import (
    Backoff,
    ProviderAuthError,
    ProviderError,
    ProviderProtocolError,
    ProviderTimeout,
    ProviderUnavailable,
    error_for_status,
    parse_retry_after,
    retry,
)

from .schedule import Booking
from .settings import CalendarSettings
from .store import current_logger
from .vehicle import Vehicle

__all__ = ["GoogleCalendarStore", "make_credentials"]

PROVIDER = "tools/calendar_google"
SCOPES = ["https://www.googleapis.com/auth/calendar"]
TAG = "hookline"  # private property marking the events this plugin made
_RATE_LIMIT_REASONS = {"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"}


# ------------------------------------------------------------------ wire shapes


class _When(msgspec.Struct):
    dateTime: str | None = None
    date: str | None = None
    timeZone: str | None = None


class _Props(msgspec.Struct):
    private: dict[str, str] = {}
    shared: dict[str, str] = {}


class _Event(msgspec.Struct):
    id: str
    start: _When = msgspec.field(default_factory=_When)
    end: _When = msgspec.field(default_factory=_When)
    status: str = "confirmed"
    created: str | None = None
    transparency: str = "opaque"
    extendedProperties: _Props = msgspec.field(default_factory=_Props)


class _Events(msgspec.Struct):
    items: list[_Event] = []
    nextPageToken: str | None = None


class _ErrorDetail(msgspec.Struct):
    reason: str = ""
    message: str = ""


class _ErrorInner(msgspec.Struct):
    code: int = 0
    message: str = ""
    errors: list[_ErrorDetail] = []


class _ErrorBody(msgspec.Struct):
    error: _ErrorInner


_error_body = msgspec.json.Decoder(_ErrorBody)


# ------------------------------------------------------------------ credentials


def make_credentials(
    settings: CalendarSettings,
    secret: Callable[[str, str], str],
    resolve_path: Callable[[str], Path] | None = None,
) -> Any:
    """google-auth credentials from the environment. `secret(env_var, key)` reads one;
    the refresh token comes from `refresh_token_file` (placed by `resolve_path`) when set
    (`hookline auth google` writes it there)."""
    if settings.service_account_file_env:
        from google.oauth2 import service_account

        path = secret(settings.service_account_file_env, "service_account_file_env")
        info = msgspec.json.decode(_read(path), type=dict[str, str | None])
        if settings.token_uri != CalendarSettings.token_uri:
            info["token_uri"] = settings.token_uri
        return service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
    from google.oauth2.credentials import Credentials

    if settings.refresh_token_file:
        path = settings.refresh_token_file
        where = resolve_path(path) if resolve_path else Path(path)
        refresh_token = _read(str(where), "refresh token file (`hookline auth google`)").decode()
    else:
        refresh_token = secret(settings.refresh_token_env, "refresh_token_env")
    return Credentials(
        token=None,
        refresh_token=refresh_token.strip(),
        client_id=secret(settings.client_id_env, "client_id_env"),
        client_secret=secret(settings.client_secret_env, "client_secret_env"),
        token_uri=settings.token_uri,
        scopes=SCOPES,
    )


def _read(path: str, what: str = "service-account key file") -> bytes:
    from hookline import ConfigError

    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"cannot read the {what} {path}: {e.strerror}") from None


# ------------------------------------------------------------------ the store


class GoogleCalendarStore:
    checks_bays = False  # no transactions: the tools re-check after inserting

    def __init__(
        self,
        settings: CalendarSettings,
        credentials: Any,
        tz: ZoneInfo,
        limiter: trio.CapacityLimiter,
    ) -> None:
        self.settings = settings
        self.calendar_id = settings.calendar_id
        self.credentials = credentials
        self.tz = tz
        self.limiter = limiter
        self._service: Any = None
        self._build_lock = threading.Lock()
        # httplib2.Http is not thread-safe: one per worker thread.
        self._local = threading.local()

    async def aclose(self) -> None:
        self.close()

    def warm(self) -> None:
        self._events()  # parsing the discovery document takes a few hundred ms

    def close(self) -> None:
        pass  # httplib2 connections close with their threads

    # -------------------------------------------------------------- plumbing

    def _http(self) -> Any:
        http = getattr(self._local, "http", None)
        if http is None:
            import google_auth_httplib2
            import httplib2

            http = google_auth_httplib2.AuthorizedHttp(
                self.credentials,
                http=httplib2.Http(timeout=self.settings.request_timeout_s),
                max_refresh_attempts=1,  # on 401: refresh, retry once
            )
            self._local.http = http
        return http

    def _events(self) -> Any:
        with self._build_lock:
            if self._service is None:
                import httplib2
                from googleapiclient.discovery import build

                self._service = build(
                    "calendar",
                    "v3",
                    http=httplib2.Http(),  # never used: each request brings its own
                    static_discovery=True,
                    cache_discovery=False,
                    client_options={"api_endpoint": self.settings.api_endpoint},
                )
            return self._service.events()

    def _run(self, make: Callable[[Any], Any]) -> Any:
        """In a worker thread: build one request and execute it once."""
        return make(self._events()).execute(http=self._http(), num_retries=0)

    async def _call(
        self, what: str, make: Callable[[Any], Any], *, ok: tuple[int, ...] = ()
    ) -> Any:
        """Run one API request with the rate-limit backoff. Statuses in `ok` come back as
        the int instead of raising (404 on get, 409 on insert...)."""
        from googleapiclient.errors import HttpError

        async def attempt() -> Any:
            try:
                return await trio.to_thread.run_sync(self._run, make, limiter=self.limiter)
            except HttpError as e:
                if e.status_code in ok:
                    return e.status_code
                raise _translate(e, what) from None
            except ProviderError:
                raise
            except Exception as e:
                raise _transport_error(e, what) from None

        s = self.settings
        backoff = Backoff(
            first_s=s.rate_limit_backoff_s,
            max_s=s.backoff_max_s,
            attempts=s.rate_limit_retries + 1,
        )
        return await retry(attempt, backoff, what=what, log=current_logger())

    # -------------------------------------------------------------- Store

    async def bookings(self, lo: dt.datetime, hi: dt.datetime) -> list[Booking]:
        return await self._list(what="list events", timeMin=_iso(lo), timeMax=_iso(hi))

    async def by_phone(self, phone: str, after: dt.datetime) -> list[Booking]:
        return await self._list(
            what="find events",
            timeMin=_iso(after),
            privateExtendedProperty=[f"{TAG}=1", f"phone={phone}"],
        )

    async def _list(self, *, what: str, **query: Any) -> list[Booking]:
        out: list[Booking] = []
        token: str | None = None
        while True:
            page = await self._call(
                what,
                lambda ev, token=token: ev.list(
                    calendarId=self.calendar_id,
                    singleEvents=True,
                    orderBy="startTime",
                    maxResults=2500,
                    pageToken=token,
                    **query,
                ),
            )
            events = msgspec.convert(page, _Events)
            out.extend(b for e in events.items if (b := self._booking(e)) and not b.cancelled)
            token = events.nextPageToken
            if not token:
                return out

    async def get(self, booking_id: str) -> Booking | None:
        result = await self._call(
            "get event",
            lambda ev: ev.get(calendarId=self.calendar_id, eventId=booking_id),
            ok=(404, 410),
        )
        if isinstance(result, int):
            return None
        return self._booking(msgspec.convert(result, _Event))

    async def insert(self, booking: Booking) -> Booking | None:
        body = self._event_body(booking)
        result = await self._call(
            "insert event",
            # With an attendee (the caller's email) Google emails the invitation.
            lambda ev: ev.insert(
                calendarId=self.calendar_id, body=body, sendUpdates=_updates(booking)
            ),
            ok=(409,),
        )
        if isinstance(result, int):
            return None
        return self._booking(msgspec.convert(result, _Event))

    async def cancel(self, booking_id: str) -> bool:
        result = await self._call(
            "delete event",
            # "all": an invited caller is told; without attendees Google sends nothing.
            lambda ev: ev.delete(
                calendarId=self.calendar_id, eventId=booking_id, sendUpdates="all"
            ),
            ok=(404, 410),
        )
        return not isinstance(result, int)

    # -------------------------------------------------------------- mapping

    def _event_body(self, b: Booking) -> dict[str, Any]:
        private = {
            TAG: "1",
            "phone": b.phone,
            "service": b.service,
            "customer": b.customer_name,
            "vehicle": b.vehicle,
            "callId": b.call_id,
            "requestId": b.request_id,
            "bay": str(b.bay or ""),
            "replaces": b.replaces,
            "code": b.confirmation_code,
            "email": b.email,
            **_vehicle_properties(b.vehicle_info),
        }
        # Each private property value is limited to 1024 characters by Google.
        private = {k: v[:1024] for k, v in private.items() if v}
        lines = [
            f"Customer: {b.customer_name}",
            f"Phone: {b.phone}",
            *(b.vehicle_info.details() if b.vehicle_info.year else [f"Vehicle: {b.vehicle}"]),
            f"Bay: {b.bay}",
        ]
        if b.notes:
            lines.append(f"Notes: {b.notes}")
        lines.append("Booked by the phone agent.")
        body: dict[str, Any] = {
            "id": b.id,
            "summary": f"{b.service.capitalize()}: {b.customer_name or b.phone}",
            "description": "\n".join(lines),
            "start": {
                "dateTime": b.start.astimezone(self.tz).isoformat(),
                "timeZone": str(self.tz),
            },
            "end": {"dateTime": b.end.astimezone(self.tz).isoformat(), "timeZone": str(self.tz)},
            "extendedProperties": {"private": private},
            "reminders": {"useDefault": True},
        }
        if b.email:
            body["attendees"] = [{"email": b.email, "displayName": b.customer_name}]
        return body

    def _booking(self, e: _Event) -> Booking | None:
        start, end = self._instant(e.start), self._instant(e.end)
        if start is None or end is None:
            return None
        if e.transparency == "transparent":  # "show me as available": takes no bay
            return None
        p = e.extendedProperties.private
        mine = p.get(TAG) == "1"
        bay = p.get("bay", "")
        return Booking(
            id=e.id,
            start=start,
            end=end,
            bay=int(bay) if mine and bay.isdigit() else None,
            service=p.get("service", "") if mine else "",
            phone=p.get("phone", "") if mine else "",
            customer_name=p.get("customer", "") if mine else "",
            vehicle=p.get("vehicle", "") if mine else "",
            call_id=p.get("callId", "") if mine else "",
            request_id=p.get("requestId", "") if mine else "",
            replaces=p.get("replaces", "") if mine else "",
            confirmation_code=p.get("code", "") if mine else "",
            email=p.get("email", "") if mine else "",
            vehicle_info=_vehicle(p) if mine else Vehicle(),
            status=e.status,
            created=dt.datetime.fromisoformat(e.created) if e.created else None,
        )

    def _instant(self, when: _When) -> dt.datetime | None:
        if when.dateTime:
            value = dt.datetime.fromisoformat(when.dateTime)
            if value.tzinfo is None:
                value = value.replace(tzinfo=ZoneInfo(when.timeZone) if when.timeZone else self.tz)
            return value.astimezone(dt.UTC)
        if when.date:  # an all-day event: the shop's whole local day
            day = dt.date.fromisoformat(when.date)
            return dt.datetime.combine(day, dt.time(0), tzinfo=self.tz).astimezone(dt.UTC)
        return None


# ------------------------------------------------------------------ errors


def _vehicle_properties(v: Vehicle) -> dict[str, str]:
    """The structured vehicle as private properties (searchable, e.g. by VIN)."""
    return {
        "vehicleYear": str(v.year or ""),
        "vehicleMake": v.make,
        "vehicleModel": v.model,
        "vin": v.vin,
        "plate": v.plate,
        "mileage": "" if v.mileage is None else str(v.mileage),
    }


def _vehicle(p: dict[str, str]) -> Vehicle:
    year, mileage = p.get("vehicleYear", ""), p.get("mileage", "")
    return Vehicle(
        year=int(year) if year.isdigit() else None,
        make=p.get("vehicleMake", ""),
        model=p.get("vehicleModel", ""),
        vin=p.get("vin", ""),
        plate=p.get("plate", ""),
        mileage=int(mileage) if mileage.isdigit() else None,
    )


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _reason(e: Any) -> tuple[str, str]:
    try:
        body = _error_body.decode(e.content)
    except (msgspec.DecodeError, msgspec.ValidationError, TypeError):
        return "", str(getattr(e, "reason", ""))
    first = body.error.errors[0] if body.error.errors else _ErrorDetail()
    return first.reason, body.error.message or first.message


def _translate(e: Any, what: str) -> ProviderError:
    """Only rate limits are retried: the caller is waiting on the line, and a 5xx or a
    timeout on a write may have gone through (the tools find their own insert again)."""
    status = e.status_code
    reason, message = _reason(e)
    text = f"{what}: HTTP {status} {reason} {message}".strip()
    retry_after = parse_retry_after(e.resp.get("retry-after") if hasattr(e.resp, "get") else None)
    if status == 403 and reason in _RATE_LIMIT_REASONS:  # Google's rate limit is a 403
        return ProviderUnavailable(text, provider=PROVIDER, retry_after=retry_after)
    return error_for_status(
        status,
        text,
        provider=PROVIDER,
        retry_after=retry_after,
        refused=ProviderProtocolError,
        retryable=status == 429,
    )


def _transport_error(e: Exception, what: str) -> ProviderError:
    from google.auth.exceptions import RefreshError, TransportError

    if isinstance(e, RefreshError):
        return ProviderAuthError(f"{what}: token refresh refused: {e}", provider=PROVIDER)
    if isinstance(e, (TimeoutError, socket.timeout)):  # not retried: see _translate
        return ProviderTimeout(f"{what}: no answer in time", provider=PROVIDER, retryable=False)
    if isinstance(e, (OSError, TransportError)) or type(e).__module__.startswith("httplib2"):
        return ProviderUnavailable(
            f"{what}: {type(e).__name__}: {e}", provider=PROVIDER, retryable=False
        )
    return ProviderProtocolError(f"{what}: {type(e).__name__}: {e}", provider=PROVIDER)


def _updates(booking: Booking) -> str:
    """Google's `sendUpdates`: "all" when the caller is an attendee (they get the
    invitation), "none" otherwise (nobody to tell)."""
    return "all" if booking.email else "none"

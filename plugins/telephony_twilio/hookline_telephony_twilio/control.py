"""Call control through Twilio's REST API: hang up, or redirect the call to a <Dial>.

twilio's REST client is blocking (requests), so every request runs in a trio thread
behind the runtime's limiter. Its failures are translated into hookline's errors.
Transient ones (429, 5xx, no connection) are retried by the core's `retry` a bounded
number of times with backoff, honouring Retry-After (seconds or an HTTP date).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import requests
import trio
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from hookline import (
    Backoff,
    ProviderError,
    ProviderProtocolError,
    ProviderTimeout,
    ProviderUnavailable,
    error_for_status,
    parse_retry_after,
    retry,
)

__all__ = ["CALL_ALREADY_OVER", "RETRY_ATTEMPTS", "CallControl", "dial_twiml"]

log = logging.getLogger("hookline.telephony.twilio")

PROVIDER = "telephony/twilio"
CALL_ALREADY_OVER = 21220  # "Call is not in-progress": the goal of a hang-up is reached
# Tries per update, and the first backoff (then doubled): 4 tries wait 0.5 + 1 + 2 s,
# which fits the engine's 5 s close deadline when Twilio answers promptly.
# Twilio's Retry-After is obeyed up to 3 s, so a hang-up still ends within that deadline.
RETRY_ATTEMPTS = 4
BACKOFF = Backoff(first_s=0.5, max_s=2.0, attempts=RETRY_ATTEMPTS, max_retry_after_s=3.0)


def dial_twiml(number: str, *, timeout_s: int, action_url: str) -> str:
    """`<Dial timeout action>`: Twilio rings `number` for `timeout_s` seconds, then asks
    `action_url` (signed, with DialCallStatus) what the caller gets next."""
    response = VoiceResponse()
    response.dial(number, timeout=timeout_s, action=action_url or None, method="POST")
    return str(response)


class _HttpClient(TwilioHttpClient):
    """twilio's HTTP client, remembering each thread's last response headers: its
    exceptions drop them, and Retry-After is in them. Thread-local because the one
    client serves every call's thread at once."""

    def __init__(self, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self._local = threading.local()

    def request(self, *args: Any, **kwargs: Any) -> Response:
        self._local.headers = {}
        response = super().request(*args, **kwargs)
        self._local.headers = response.headers or {}
        return response

    def retry_after(self) -> str | None:
        return getattr(self._local, "headers", {}).get("Retry-After")


class CallControl:
    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        base_url: str,
        timeout: float,
        limiter: trio.CapacityLimiter,
    ) -> None:
        self._http = _HttpClient(timeout)
        self._client = Client(account_sid, auth_token, http_client=self._http)
        self._client.api.base_url = base_url.rstrip("/")
        self._limiter = limiter

    async def hangup(self, call_sid: str) -> None:
        """End the call; a call that is already over, or gone, counts as done.

        Setting `completed` twice is harmless, so every transient failure is retried.
        """
        await self._update(call_sid, "hang-up", retry_timeouts=True, status="completed")

    async def transfer(
        self, call_sid: str, number: str, *, timeout_s: int = 20, action_url: str = ""
    ) -> None:
        """Leave the media stream and dial `number` (Twilio then stops the stream); when
        the Dial ends Twilio posts its outcome to `action_url`.

        A timed-out redirect may have happened: it is not retried (a second one would
        dial again); refusals that Twilio made before acting (429, 5xx) are.
        """
        await self._update(
            call_sid,
            "transfer",
            retry_timeouts=False,
            twiml=dial_twiml(number, timeout_s=timeout_s, action_url=action_url),
        )

    async def replace_twiml(self, call_sid: str, twiml: str, what: str) -> None:
        """Have the call leave its stream and run `twiml` (a busy message, say).

        Not retried on a timeout: it may have happened, and a second one would restart it.
        """
        await self._update(call_sid, what, retry_timeouts=False, twiml=twiml)

    async def _update(
        self, call_sid: str, what: str, *, retry_timeouts: bool, **fields: str
    ) -> None:
        def update() -> tuple[TwilioRestException | None, str | None]:
            try:
                self._client.calls(call_sid).update(**fields)
            except TwilioRestException as e:
                return e, self._http.retry_after()
            return None, None

        async def attempt() -> None:
            try:
                refused, retry_after = await trio.to_thread.run_sync(update, limiter=self._limiter)
            except requests.ConnectionError as e:  # includes ConnectTimeout: nothing was sent
                raise ProviderUnavailable(f"call {what} failed: {e}", provider=PROVIDER) from None
            except requests.Timeout as e:
                # A timed-out request may have been carried out: only a hang-up (setting
                # `completed` twice is harmless) may be sent again.
                raise ProviderTimeout(
                    f"call {what} timed out: {e}", provider=PROVIDER, retryable=retry_timeouts
                ) from None
            except requests.RequestException as e:
                raise ProviderUnavailable(
                    f"call {what} failed: {e}", provider=PROVIDER, retryable=False
                ) from None
            if refused is None:
                return
            if refused.code == CALL_ALREADY_OVER:
                log.info("%s of call %s: it was already over (21220)", what, call_sid)
                return
            if refused.status == 404 and what == "hang-up":
                log.info("hang-up of call %s: Twilio no longer knows it (404), done", call_sid)
                return
            raise _translate(refused, what, parse_retry_after(retry_after))

        await retry(attempt, BACKOFF, what=f"{what} of call {call_sid}", log=log)


def _translate(e: TwilioRestException, what: str, retry_after: float | None) -> ProviderError:
    return error_for_status(
        e.status,
        f"call {what} refused: HTTP {e.status}, code {e.code}: {e.msg}",
        provider=PROVIDER,
        retry_after=retry_after,
        refused=ProviderProtocolError,
    )

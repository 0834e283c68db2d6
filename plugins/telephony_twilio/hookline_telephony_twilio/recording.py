"""Call recording (`[recording] enabled = true`): started through Twilio's REST API when
the media stream starts, stored when Twilio's recording status callback arrives.

- `Recorder.start(call_sid, callback_url)`: `POST .../Calls/{CallSid}/Recordings.json`
  with `RecordingStatusCallback` pointing at `POST /twilio/recording` (event
  `completed`). The twilio client is blocking: a thread behind the runtime's limiter,
  transient refusals (429, 5xx, no connection) retried with the core's `retry`. A
  recording that cannot be started is logged; the call goes on unrecorded.
- `store_recording(handler, form)`: the callback (its signature already checked by the
  route) becomes `handler.record_recording(...)`: the `recordings` table in analytics.

The caller is told in the greeting (the core appends `[recording] disclosure`).
"""

from __future__ import annotations

import logging

import requests
import trio
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from hookline import (
    Backoff,
    CallHandler,
    ProviderProtocolError,
    ProviderUnavailable,
    error_for_status,
    retry,
)

from .security import FormParams

__all__ = ["RECORDING_PATH", "Recorder", "store_recording"]

log = logging.getLogger("hookline.telephony.twilio")

RECORDING_PATH = "/twilio/recording"
PROVIDER = "telephony/twilio"
# Starting a recording twice would make two: only refusals Twilio made before acting are
# retried (429, 5xx, no connection), never a timed-out request.
BACKOFF = Backoff(first_s=0.5, max_s=4.0, attempts=4, max_retry_after_s=5.0)


class Recorder:
    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        base_url: str,
        timeout: float,
        limiter: trio.CapacityLimiter,
    ) -> None:
        self._client = Client(account_sid, auth_token, http_client=TwilioHttpClient(timeout))
        self._client.api.base_url = base_url.rstrip("/")
        self._limiter = limiter

    async def start(self, call_sid: str, callback_url: str, clog: logging.LoggerAdapter) -> str:
        """Start recording the live call; the recording's SID, or "" when it failed."""

        def create() -> str:
            recording = self._client.calls(call_sid).recordings.create(
                recording_status_callback=callback_url,
                recording_status_callback_event=["completed"],
                recording_status_callback_method="POST",
            )
            return str(recording.sid)

        async def attempt() -> str:
            try:
                return await trio.to_thread.run_sync(create, limiter=self._limiter)
            except requests.ConnectionError as e:
                raise ProviderUnavailable(
                    f"recording start failed: {e}", provider=PROVIDER
                ) from None
            except requests.RequestException as e:  # a timeout may have started it
                raise ProviderUnavailable(
                    f"recording start failed: {e}", provider=PROVIDER, retryable=False
                ) from None
            except TwilioRestException as e:
                raise error_for_status(
                    e.status,
                    f"recording start refused: HTTP {e.status}, code {e.code}: {e.msg}",
                    provider=PROVIDER,
                    refused=ProviderProtocolError,
                ) from None

        try:
            sid = await retry(attempt, BACKOFF, what=f"recording of call {call_sid}", log=log)
        except Exception as e:
            clog.error("the call is NOT being recorded: %s", e)
            return ""
        clog.info("recording %s started", sid)
        return sid


def store_recording(handler: CallHandler, form: FormParams) -> str | None:
    """Hand a signature-checked recording callback to the runtime; None when it is
    stored, else why it was not (the route answers 400)."""
    call_sid = form.first("CallSid")
    recording_sid = form.first("RecordingSid")
    if not call_sid or not recording_sid:
        return "CallSid and RecordingSid are required"
    duration: float | None = None
    raw = form.first("RecordingDuration")
    if raw:
        try:
            duration = float(raw)
        except ValueError:
            duration = -1.0
        if not 0 <= duration < 1e7:  # also refuses nan and inf
            return f"RecordingDuration {raw[:20]!r} is not a number of seconds"
    status = form.first("RecordingStatus") or "completed"
    handler.record_recording(
        call_sid,
        recording_sid=recording_sid,
        status=status,
        duration_s=duration,
        url=form.first("RecordingUrl"),
    )
    log.info("recording %s of call %s: %s (%s s)", recording_sid, call_sid, status, raw or "?")
    return None

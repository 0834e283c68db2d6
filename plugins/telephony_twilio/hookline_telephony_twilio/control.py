"""Call control through Twilio's REST API: hang up, or redirect the call to a <Dial>.

twilio's REST client is blocking (requests), so every request runs in a trio thread
behind the runtime's limiter. Its failures are translated into hookline's errors.
"""

from __future__ import annotations

import logging

import requests
import trio
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from hookline.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderProtocolError,
    ProviderTimeout,
    ProviderUnavailable,
)

__all__ = ["CALL_ALREADY_OVER", "CallControl", "dial_twiml"]

log = logging.getLogger("hookline.telephony.twilio")

PROVIDER = "telephony/twilio"
CALL_ALREADY_OVER = 21220  # "Call is not in-progress": the goal of a hang-up is reached


def dial_twiml(number: str) -> str:
    response = VoiceResponse()
    response.dial(number)
    return str(response)


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
        self._client = Client(
            account_sid, auth_token, http_client=TwilioHttpClient(timeout=timeout)
        )
        self._client.api.base_url = base_url.rstrip("/")
        self._limiter = limiter

    async def hangup(self, call_sid: str) -> None:
        """End the call; a call that is already over counts as done."""
        await self._update(call_sid, status="completed")

    async def transfer(self, call_sid: str, number: str) -> None:
        """Leave the media stream and dial `number` (Twilio then stops the stream)."""
        await self._update(call_sid, twiml=dial_twiml(number))

    async def _update(self, call_sid: str, **fields: str) -> None:
        def update() -> None:
            self._client.calls(call_sid).update(**fields)

        try:
            await trio.to_thread.run_sync(update, limiter=self._limiter)
        except TwilioRestException as e:
            if e.code == CALL_ALREADY_OVER:
                log.info("call %s was already over (21220)", call_sid)
                return
            raise _translate(e) from e
        except requests.Timeout as e:
            raise ProviderTimeout(f"call update timed out: {e}", provider=PROVIDER) from e
        except requests.RequestException as e:
            raise ProviderUnavailable(f"call update failed: {e}", provider=PROVIDER) from e


def _translate(e: TwilioRestException) -> ProviderError:
    what = f"call update refused: HTTP {e.status}, code {e.code}: {e.msg}"
    if e.status in (401, 403):
        return ProviderAuthError(what, provider=PROVIDER)
    if e.status == 429 or e.status >= 500:
        return ProviderUnavailable(what, provider=PROVIDER)
    return ProviderProtocolError(what, provider=PROVIDER)

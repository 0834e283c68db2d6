"""SMS through Twilio's Messages API: the `sms` notification channel, and STOP replies.

`[notifications.sms]` turns the channel on (see `SmsSettings`); the outbox hands it one
notification at a time from its sender task. twilio's REST client is blocking, so each
message is created in a trio thread behind the runtime's limiter. Refusals become
hookline's errors: 429 and 5xx are retryable (the outbox tries again later, honouring
Retry-After); an invalid number (21211) or an unsubscribed recipient (21610) is not.

`POST /twilio/sms` (the number's "A message comes in" webhook, signature-checked like
the voice webhook) records STOP / START replies per number in the outbox, which checks
them before every send. Twilio itself answers STOP with its standard confirmation, so
the reply here is an empty TwiML `<Response/>`.
"""

from __future__ import annotations

import logging

import msgspec
import requests
import trio
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from hookline import (
    ChannelSpec,
    Notification,
    Outbox,
    PhoneNumber,
    ProviderContext,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    Seconds,
    error_for_status,
    parse_retry_after,
)

from .asgi import Receive, Send, read_body, refuse_websocket, respond
from .control import _HttpClient
from .security import FormParams
from .settings import BaseUrl

__all__ = [
    "CHANNEL",
    "INVALID_NUMBER",
    "SMS_PATH",
    "START_WORDS",
    "STOP_WORDS",
    "SmsChannel",
    "SmsSettings",
    "channel_spec",
    "inbound_sms",
]

log = logging.getLogger("hookline.notifications.sms")

PROVIDER = "notifications/sms"
CHANNEL = "sms"
SMS_PATH = "/twilio/sms"
INVALID_NUMBER = 21211  # "The 'To' number is not a valid phone number"
UNSUBSCRIBED = 21610  # "Attempt to send to unsubscribed recipient" (they replied STOP)
NOT_RETRYABLE = frozenset({INVALID_NUMBER, UNSUBSCRIBED, 21612, 21614})
# Twilio's own opt-out and opt-in keywords (a reply that is exactly one of these).
STOP_WORDS = frozenset({"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "optout"})
START_WORDS = frozenset({"start", "yes", "unstop"})
EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'


class SmsSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`[notifications.sms]`: `from_number` is the shop's Twilio number (E.164) that texts
    are sent from; the account's credentials come from the same environment variables
    as the telephony provider's."""

    from_number: PhoneNumber
    account_sid_env: str = "TWILIO_ACCOUNT_SID"
    auth_token_env: str = "TWILIO_AUTH_TOKEN"
    # Where the REST client sends messages; tests point it at the loopback fake.
    api_base_url: BaseUrl = "https://api.twilio.com"
    timeout_s: Seconds = 10.0


class SmsChannel:
    """Sends a notification's `body` to its `to` number from `from_number`."""

    def __init__(
        self,
        settings: SmsSettings,
        *,
        account_sid: str,
        auth_token: str,
        limiter: trio.CapacityLimiter,
    ) -> None:
        self.from_number = settings.from_number
        self._http = _HttpClient(settings.timeout_s)
        self._client = Client(account_sid, auth_token, http_client=self._http)
        self._client.api.base_url = settings.api_base_url.rstrip("/")
        self._limiter = limiter

    @classmethod
    def create(cls, settings: SmsSettings, ctx: ProviderContext) -> SmsChannel:
        return cls(
            settings,
            account_sid=ctx.secret(settings.account_sid_env, key="account_sid_env"),
            auth_token=ctx.secret(settings.auth_token_env, key="auth_token_env"),
            limiter=ctx.thread_limiter,
        )

    async def send(self, notification: Notification) -> None:
        to, body = notification.to, notification.body
        if not to or not body:
            raise ProviderError("an SMS needs a number and a text", provider=PROVIDER)

        def create() -> tuple[TwilioRestException | None, str | None]:
            try:
                self._client.messages.create(to=to, from_=self.from_number, body=body)
            except TwilioRestException as e:
                return e, self._http.retry_after()
            return None, None

        try:
            refused, retry_after = await trio.to_thread.run_sync(create, limiter=self._limiter)
        except requests.ConnectionError as e:  # nothing was sent
            raise ProviderUnavailable(f"SMS not sent: {e}", provider=PROVIDER) from None
        except requests.Timeout as e:  # it may have been sent: retried, the id is the same
            raise ProviderTimeout(f"SMS timed out: {e}", provider=PROVIDER) from None
        except requests.RequestException as e:
            raise ProviderUnavailable(
                f"SMS not sent: {e}", provider=PROVIDER, retryable=False
            ) from None
        if refused is None:
            return
        raise error_for_status(
            refused.status,
            f"SMS refused: HTTP {refused.status}, code {refused.code}: {refused.msg}",
            provider=PROVIDER,
            retry_after=parse_retry_after(retry_after),
            retryable=False if refused.code in NOT_RETRYABLE else None,
        )


def channel_spec() -> ChannelSpec:
    return ChannelSpec(
        name=CHANNEL,
        settings=SmsSettings,
        create=SmsChannel.create,
        description="text messages through Twilio's Messages API",
    )


def opt_out_word(body: str) -> bool | None:
    """True for a STOP reply, False for START, None for anything else."""
    word = body.strip().strip(".!").lower()
    if word in STOP_WORDS:
        return True
    if word in START_WORDS:
        return False
    return None


async def inbound_sms(
    scope: dict,
    receive: Receive,
    send: Send,
    *,
    outbox: Outbox,
    check_signature: object,
    max_bytes: int,
) -> None:
    """`POST /twilio/sms`: record a STOP or START reply for the sender's number.

    `check_signature(scope, form) -> bool` is the telephony provider's webhook check
    (None: signatures are not validated)."""
    if scope["type"] != "http":
        await refuse_websocket(receive, send)
        return
    if scope["method"] != "POST":
        await respond(send, 405, b"POST only\n", "text/plain", extra=[(b"allow", b"POST")])
        return
    raw = await read_body(receive, max_bytes)
    if raw is None:
        await respond(send, 413, b"body too large\n", "text/plain")
        return
    form = FormParams.parse(raw)
    if callable(check_signature) and not check_signature(scope, form):
        log.warning("inbound SMS refused: missing or wrong X-Twilio-Signature")
        await respond(send, 403, b"invalid signature\n", "text/plain")
        return
    number, choice = form.first("From"), opt_out_word(form.first("Body"))
    if number and choice is not None:
        try:
            await outbox.set_opt_out(CHANNEL, number, choice)
        except ProviderError as e:  # Twilio retries a failed webhook: answer 503
            log.warning("could not record an SMS %s: %s", "STOP" if choice else "START", e)
            await respond(send, 503, b"try again\n", "text/plain")
            return
        log.info("SMS %s from …%s recorded", "STOP" if choice else "START", number[-4:])
    await respond(send, 200, EMPTY_TWIML, "text/xml")

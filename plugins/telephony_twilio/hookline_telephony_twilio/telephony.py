"""The Twilio telephony provider: three ASGI routes and the calls they hand over.

- `POST /twilio/voice`: the incoming-call webhook. Checks the signature, refuses a
  CallSid it already answered (a replay), reserves a call slot (or answers busy) and
  answers `<Connect><Stream>` TwiML whose parameters carry a one-use token for this call.
- `WS /twilio/media`: the Media Streams socket. Checks the upgrade's signature, waits
  for `start`, claims the token and runs the call on a `TwilioLeg`.
- `POST /twilio/status`: call and stream status callbacks, recorded as call events.
- `POST /twilio/transfer-result`: the action callback of a transfer's `<Dial>` (see
  transfer.py): hang up after an answered transfer, or stream the caller back to the
  agent (a new token for the same CallSid) when nobody answered.
- `POST /twilio/recording`: recording status callbacks (`[recording] enabled`), stored
  against the call (see recording.py).
- `POST /twilio/sms`: inbound texts; STOP / START replies are recorded (see sms.py).

The slot reserved at the webhook belongs to the webhook's request until its token is
settled: claimed by the stream (then `run_call` releases it at the end), or given up
(the token expired, was presented for another call, or Twilio reported the stream
failed; then it is released here). Holding it in the request's own task gives it a
visible owner; the response says `Connection: close` so no keep-alive request queues
behind that task.

Admission is per process. The token is self-verifying (security.TokenBook), so behind
a load balancer the stream may reach another replica than the webhook did: that
replica admits the call again at `start`, against its own limit, and when it is full
the caller hears the busy message (the call is redirected off the stream) and the call
is recorded as rejected. The webhook's replica then gets its slot back at the token's
expiry (`token_ttl_s`).

Nothing an unauthenticated request claims is stored: bad signatures, replays and bad
stream tokens are counted (`handler.count_refused`) and logged at most once a minute
per kind. A replay is answered 403, like a bad signature: it is not a call Twilio is
placing, so it gets no TwiML at all (a hang-up TwiML would look like an answered call
in Twilio's logs, and if Twilio itself ever re-sent a webhook, a 403 sends it to the
number's fallback URL, which the deployer chose for exactly that).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio
from twilio.twiml.voice_response import VoiceResponse

from hookline import (
    CallHandler,
    CallInfo,
    Outbox,
    ProviderContext,
    ProviderError,
    Route,
    new_call_id,
)

from . import protocol as p
from .asgi import Receive, Send, read_body, refuse_websocket, respond
from .control import CallControl
from .leg import BadInput, CallLog, MediaSocket, TwilioLeg
from .recording import RECORDING_PATH, Recorder, store_recording
from .security import (
    CallSidBook,
    FormParams,
    RateLimitedLog,
    Signer,
    TokenBook,
    request_url,
    stream_token_key,
)
from .settings import TwilioSettings
from .sms import SMS_PATH, inbound_sms
from .transfer import PendingTransfer, TransferBook, outcome_of

__all__ = [
    "CLOSE_POLICY",
    "MEDIA_PATH",
    "RECORDING_PATH",
    "STATUS_PATH",
    "TRANSFER_PATH",
    "VOICE_PATH",
    "TwilioTelephony",
]

log = logging.getLogger("hookline.telephony.twilio")

VOICE_PATH = "/twilio/voice"
MEDIA_PATH = "/twilio/media"
STATUS_PATH = "/twilio/status"
TRANSFER_PATH = "/twilio/transfer-result"
CLOSE_POLICY = 1008  # bad signature, bad token, no `start` in time
TOKEN_PARAMETER = "token"
# Stream status events after which no stream of that call will start.
STREAM_FAILED = frozenset({"stream-error", "stream-stopped"})

_UNSAFE = (
    "signature validation is OFF ([telephony.twilio] validate_signatures = false): "
    "anyone who finds this server can place calls through it"
)


class TwilioTelephony:
    """Implements `hookline.providers.Telephony` for Twilio Media Streams."""

    def __init__(
        self,
        settings: TwilioSettings,
        *,
        auth_token: str,
        account_sid: str,
        limiter: trio.CapacityLimiter,
        busy_message: str,
        record: bool = False,
        outbox: Outbox | None = None,
        stream_key: str | None = None,
    ) -> None:
        self.settings = settings
        self.outbox = outbox  # where SMS STOP/START replies are recorded
        self.busy_message = busy_message
        self.signer = Signer(auth_token, settings.public_url.rstrip("/"))
        # Without a key of its own, tokens are keyed from the auth token: every replica
        # has it, so zero setup still works across processes and machines.
        key = stream_token_key(stream_key or auth_token)
        self.tokens = TokenBook(settings.token_ttl_s, key)
        self.answered = CallSidBook(settings.replay_window_s, settings.replay_memory)
        self.refusals = RateLimitedLog(log)
        self.transfers = TransferBook()
        self.control = CallControl(
            account_sid=account_sid,
            auth_token=auth_token,
            base_url=settings.api_base_url,
            timeout=settings.rest_timeout_s,
            limiter=limiter,
        )
        self.recorder = (
            Recorder(
                account_sid=account_sid,
                auth_token=auth_token,
                base_url=settings.api_base_url,
                timeout=settings.rest_timeout_s,
                limiter=limiter,
            )
            if record
            else None
        )
        if not settings.validate_signatures:
            log.warning(_UNSAFE)

    @classmethod
    def create(cls, settings: TwilioSettings, ctx: ProviderContext) -> TwilioTelephony:
        return cls(
            settings,
            auth_token=ctx.secret(settings.auth_token_env, key="auth_token_env"),
            account_sid=ctx.secret(settings.account_sid_env, key="account_sid_env"),
            limiter=ctx.thread_limiter,
            busy_message=ctx.agent.busy_message,
            record=ctx.recording.enabled,
            outbox=ctx.outbox,
            stream_key=_stream_key(settings, ctx),
        )

    def routes(self, handler: CallHandler) -> Sequence[Route]:
        calls = _Routes(self, handler)
        routes = [
            Route(VOICE_PATH, calls.voice),
            Route(MEDIA_PATH, calls.media),
            Route(STATUS_PATH, calls.status),
            Route(TRANSFER_PATH, calls.transfer_result),
            Route(SMS_PATH, calls.sms),
        ]
        if self.recorder is not None:  # no recordings, no route for their callbacks
            routes.append(Route(RECORDING_PATH, calls.recording))
        return routes


MIN_STREAM_KEY_CHARS = 32


def _stream_key(settings: TwilioSettings, ctx: ProviderContext) -> str | None:
    key = ctx.secrets.optional(settings.stream_token_key_variable)
    if key is not None and len(key) < MIN_STREAM_KEY_CHARS:
        raise ctx.config_error(
            f"{settings.stream_token_key_variable} is too short for a signing key: use at least "
            f"{MIN_STREAM_KEY_CHARS} random characters (e.g. `openssl rand -hex 32`)",
            key="stream_token_key_variable",
        )
    return key


class _Routes:
    def __init__(self, telephony: TwilioTelephony, handler: CallHandler) -> None:
        self.t = telephony
        self.settings = telephony.settings
        self.handler = handler

    # ------------------------------------------------------------------ webhook

    async def voice(self, scope: dict, receive: Receive, send: Send) -> None:
        form = await self._read_form(scope, receive, send)
        if form is None:
            return
        if not self.settings.validate_signatures:
            log.warning(_UNSAFE)
        elif not self.t.signer.check_webhook(scope, form):
            self._refuse("bad_signature", "webhook refused: missing or wrong X-Twilio-Signature")
            await respond(send, 403, b"invalid signature\n", "text/plain")
            return
        info = CallInfo(
            call_id=new_call_id(),
            provider_call_id=form.first("CallSid"),
            from_number=form.first("From"),
            to_number=form.first("To"),
        )
        if not info.provider_call_id:
            log.warning("webhook refused: no CallSid (400)")
            await respond(send, 400, b"CallSid missing\n", "text/plain")
            return
        # Before admission: a replay must not take a slot, not even for a moment.
        replays = self.t.answered.seen_before(info.provider_call_id)
        if replays:
            self.handler.count_refused("replay")
            if replays == 1:
                log.warning(
                    "webhook refused: call %s was already answered, this is a replay (403; "
                    "further replays of it are only counted)",
                    info.provider_call_id,
                )
            await respond(send, 403, b"already answered\n", "text/plain")
            return
        clog = CallLog(log, {"call_id": info.call_id})
        if not self.handler.try_admit():
            clog.info("busy: answered the busy message (call %s)", info.provider_call_id)
            self.handler.record_rejected(info, "busy")
            await respond(send, 200, self._busy_twiml().encode(), "text/xml")
            return
        # No number here: the engine's "call started" line shows it as the privacy
        # setting allows.
        clog.info("call %s answered with a stream", info.provider_call_id)
        await self._answer_with_stream(scope, send, info, clog)

    async def _answer_with_stream(
        self, scope: dict, send: Send, info: CallInfo, clog: CallLog
    ) -> None:
        """Answer `<Connect><Stream>` with a new token for `info`, then hold the call slot
        (already admitted) until a stream claims the token or it is given up."""
        token, pending = self.t.tokens.issue(info)
        try:
            twiml = self._stream_twiml(scope, info, token)
            await respond(send, 200, twiml.encode(), "text/xml", close=True)
            with trio.move_on_at(pending.expires):
                await pending.settled.wait()
        finally:
            self.t.tokens.forget(token)  # settles it if nothing else did
            if not pending.claimed:
                self.handler.release()
                # Behind a load balancer the stream may have gone to another replica,
                # which admitted it there: that is not a fault, so not a warning.
                clog.info(
                    "no media stream here for call %s (none came, or another process took "
                    "it): call slot released",
                    info.provider_call_id,
                )

    def _stream_twiml(self, scope: dict, info: CallInfo, token: str) -> str:
        media_url = request_url(
            {**scope, "path": MEDIA_PATH}, self.t.signer.public_url, websocket=True
        )
        status_url = request_url(
            {**scope, "path": STATUS_PATH}, self.t.signer.public_url, websocket=False
        )
        response = VoiceResponse()
        connect = response.connect()
        stream = connect.stream(
            url=media_url,
            name=self.settings.stream_name,
            status_callback=status_url,
            status_callback_method="POST",
        )
        stream.parameter(name="from", value=info.from_number)
        stream.parameter(name="to", value=info.to_number)
        for name, value in info.parameters.items():
            stream.parameter(name=name, value=value)
        stream.parameter(name=TOKEN_PARAMETER, value=token)
        return str(response)

    def _hangup_twiml(self) -> str:
        response = VoiceResponse()
        response.hangup()
        return str(response)

    # ------------------------------------------------------------------ transfer result

    async def transfer_result(self, scope: dict, receive: Receive, send: Send) -> None:
        form = await self._read_form(scope, receive, send)
        if form is None:
            return
        if self.settings.validate_signatures and not self.t.signer.check_webhook(scope, form):
            self._refuse(
                "bad_signature", "transfer result refused: missing or wrong X-Twilio-Signature"
            )
            await respond(send, 403, b"invalid signature\n", "text/plain")
            return
        call_sid = form.first("CallSid")
        transfer = self.t.transfers.take(call_sid)
        if transfer is None:
            # Not a transfer this process is waiting for: a replay of an answered
            # callback, a forgery, or one past its time. Nothing it claims is stored.
            self._refuse("replay", "transfer result refused: no transfer of this call is due")
            await respond(send, 403, b"no transfer pending\n", "text/plain")
            return
        status = form.first("DialCallStatus")
        outcome = outcome_of(status, form.first("DialCallDuration"))
        clog = CallLog(log, {"call_id": transfer.info.call_id})
        clog.info("transfer of call %s: %s (DialCallStatus %s)", call_sid, outcome, status)
        fields = {name: values[-1] for name, values in form.items()}
        fields.update(event="transfer", transfer_outcome=outcome, transfer_number=transfer.number)
        self.handler.record_status(call_sid, fields)
        if outcome == "answered":
            await respond(send, 200, self._hangup_twiml().encode(), "text/xml")
            return
        await self._stream_back(scope, send, transfer, outcome)

    async def _stream_back(
        self, scope: dict, send: Send, transfer: PendingTransfer, outcome: str
    ) -> None:
        """Nobody took the transfer: the caller comes back to the agent on a new stream of
        the same CallSid (a new call id; the runtime links the two by CallSid)."""
        before = transfer.info
        info = CallInfo(
            call_id=new_call_id(),
            provider_call_id=before.provider_call_id,
            from_number=before.from_number,
            to_number=before.to_number,
            parameters={"transfer_outcome": outcome},
        )
        clog = CallLog(log, {"call_id": info.call_id})
        if not self.handler.try_admit():
            clog.info("busy when the caller came back from a transfer: busy message")
            self.handler.record_rejected(info, "busy")
            await respond(send, 200, self._busy_twiml().encode(), "text/xml")
            return
        clog.info(
            "call %s back from an unanswered transfer (was %s)",
            info.provider_call_id,
            before.call_id,
        )
        await self._answer_with_stream(scope, send, info, clog)

    def _busy_twiml(self) -> str:
        response = VoiceResponse()
        response.say(self.t.busy_message)
        response.hangup()
        return str(response)

    # ------------------------------------------------------------------ SMS replies

    async def sms(self, scope: dict, receive: Receive, send: Send) -> None:
        outbox = self.t.outbox or Outbox.disabled()
        check = self.t.signer.check_webhook if self.settings.validate_signatures else None
        await inbound_sms(
            scope,
            receive,
            send,
            outbox=outbox,
            check_signature=check,
            max_bytes=self.settings.max_message_bytes,
        )

    # ------------------------------------------------------------------ status callbacks

    async def status(self, scope: dict, receive: Receive, send: Send) -> None:
        form = await self._read_form(scope, receive, send)
        if form is None:
            return
        if self.settings.validate_signatures and not self.t.signer.check_webhook(scope, form):
            self._refuse(
                "bad_signature", "status callback refused: missing or wrong X-Twilio-Signature"
            )
            await respond(send, 403, b"invalid signature\n", "text/plain")
            return
        fields = {name: values[-1] for name, values in form.items()}
        call_sid = form.first("CallSid")
        if form.first("StreamEvent") in STREAM_FAILED and self.t.tokens.give_up(call_sid):
            # Twilio could not open the stream (or it ended before `start`): none will
            # come for this call, so its reserved slot is free now, not at the token TTL.
            log.warning(
                "stream of call %s failed before it started (%s): call slot released",
                call_sid,
                form.first("StreamError") or form.first("StreamEvent"),
            )
        self.handler.record_status(call_sid, fields)
        await respond(send, 204, b"", "text/plain")

    async def recording(self, scope: dict, receive: Receive, send: Send) -> None:
        form = await self._read_form(scope, receive, send)
        if form is None:
            return
        if self.settings.validate_signatures and not self.t.signer.check_webhook(scope, form):
            self._refuse(
                "bad_signature", "recording callback refused: missing or wrong X-Twilio-Signature"
            )
            await respond(send, 403, b"invalid signature\n", "text/plain")
            return
        problem = store_recording(self.handler, form)
        if problem:
            log.warning("recording callback refused (400): %s", problem)
            await respond(send, 400, problem.encode() + b"\n", "text/plain")
            return
        await respond(send, 204, b"", "text/plain")

    async def _read_form(self, scope: dict, receive: Receive, send: Send) -> FormParams | None:
        if scope["type"] != "http":
            await refuse_websocket(receive, send)
            return None
        if scope["method"] != "POST":
            await respond(send, 405, b"POST only\n", "text/plain", extra=[(b"allow", b"POST")])
            return None
        body = await read_body(receive, self.settings.max_message_bytes)
        if body is None:
            log.warning(
                "refused a %s body over %d bytes (413)",
                scope["path"],
                self.settings.max_message_bytes,
            )
            await respond(send, 413, b"body too large\n", "text/plain")
            return None
        return FormParams.parse(body)

    # ------------------------------------------------------------------ media stream

    async def media(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await respond(
                send, 426, b"WebSocket only\n", "text/plain", extra=[(b"upgrade", b"websocket")]
            )
            return
        connect = await receive()
        if connect["type"] != "websocket.connect":
            return
        if not self.settings.validate_signatures:
            log.warning(_UNSAFE)
        elif not self.t.signer.check_upgrade(scope):
            self._refuse(
                "bad_signature", "media stream refused: missing or wrong X-Twilio-Signature"
            )
            # Closing before accepting makes the server refuse the upgrade (HTTP 403).
            await send({"type": "websocket.close", "code": CLOSE_POLICY})
            return
        await send({"type": "websocket.accept"})
        stream_log = CallLog(log, {"call_id": "-"})
        socket = MediaSocket(
            receive, send, max_bytes=self.settings.max_message_bytes, bad=BadInput(stream_log)
        )
        try:
            await self._run_stream(scope, socket, stream_log)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await socket.close()

    async def _run_stream(self, scope: dict, socket: MediaSocket, stream_log: CallLog) -> None:
        start = None
        with trio.move_on_after(self.settings.start_timeout_s):
            start = await _wait_for_start(socket)
        if start is None:
            if not socket.closed:
                stream_log.warning(
                    "no `start` within %.1f s: stream closed", self.settings.start_timeout_s
                )
                await socket.close(CLOSE_POLICY)
            return
        body = start.start
        token = body.customParameters.get(TOKEN_PARAMETER, "")
        claim = self.t.tokens.claim(token, body.callSid, body.customParameters)
        if claim is None:
            # Anyone holding one captured upgrade signature can get this far (it signs
            # only the URL): count it, store nothing it claims.
            self._refuse(
                "bad_token",
                "media stream refused: stream token missing, malformed, wrongly signed, "
                "reused, expired or issued for another call",
            )
            await socket.close(CLOSE_POLICY)
            return
        info = CallInfo(
            call_id=claim.info.call_id,
            provider_call_id=body.callSid,
            from_number=claim.info.from_number,
            to_number=claim.info.to_number,
            parameters={k: v for k, v in body.customParameters.items() if k != TOKEN_PARAMETER},
        )
        # The webhook was answered by another process: admit the call here, against this
        # process's own limit (each process admits only what it can carry).
        if not claim.slot_reserved:
            stream_log.extra["call_id"] = info.call_id
            if not self.handler.try_admit():
                await self._answer_busy(socket, info, stream_log)
                return
            stream_log.info("stream admitted here; another process answered its webhook")
        clog = stream_log
        clog.extra["call_id"] = info.call_id  # from now on every line names the call
        leg = TwilioLeg(
            info,
            socket,
            body.streamSid,
            self.t.control,
            clog,
            transfers=self.t.transfers,
            transfer_action_url=self._transfer_url(scope),
            transfer_timeout_s=self.settings.transfer_timeout_s,
        )
        clog.info("media stream %s started", body.streamSid)
        try:
            async with trio.open_nursery() as nursery:
                if self.t.recorder is not None:  # alongside the greeting, never before it
                    callback = request_url(
                        {**scope, "path": RECORDING_PATH},
                        self.t.signer.public_url,
                        websocket=False,
                    )
                    nursery.start_soon(self.t.recorder.start, body.callSid, callback, clog)
                await self.handler.run_call(leg)  # releases the slot reserved at the webhook
                nursery.cancel_scope.cancel()
        finally:
            if socket.bad.counts:
                clog.warning("bad input during the call: %s", socket.bad.summary())
            clog.info("media stream %s ended", body.streamSid)

    def _transfer_url(self, scope: dict) -> str:
        return request_url(
            {**scope, "path": TRANSFER_PATH}, self.t.signer.public_url, websocket=False
        )

    async def _answer_busy(self, socket: MediaSocket, info: CallInfo, clog: CallLog) -> None:
        """Full when the stream arrived: the caller hears the busy message (Twilio says
        it, the call leaves the stream) and the call is recorded as rejected."""
        clog.info("busy: stream of call %s refused, busy message sent", info.provider_call_id)
        self.handler.record_rejected(info, "busy")
        try:
            await self.t.control.replace_twiml(
                info.provider_call_id, self._busy_twiml(), "busy message"
            )
        except ProviderError as e:
            clog.warning("sending the busy message failed (%s): hanging up", e)
            with trio.move_on_after(self.settings.rest_timeout_s):
                try:
                    await self.t.control.hangup(info.provider_call_id)
                except ProviderError as e:
                    clog.warning("hanging up the refused call failed: %s", e)
        await socket.close()

    def _refuse(self, reason: str, message: str) -> None:
        self.handler.count_refused(reason)
        self.t.refusals.warning(message)


async def _wait_for_start(socket: MediaSocket) -> p.Start | None:
    while True:
        msg = await socket.next_message()
        if msg is None or isinstance(msg, p.Start):
            return msg
        if not isinstance(msg, p.Connected):
            socket.bad.note("before_start", type(msg).__name__.lower())

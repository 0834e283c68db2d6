"""Ask the shop's own webhook: a signed, time-bounded POST of the question.

Request: `POST webhook_url` with JSON `{"question": "...", "call_id": "..."}` and headers
  X-Hookline-Timestamp: <UNIX seconds>
  X-Hookline-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>
The shop checks the signature (and that the timestamp is recent, against replays) and
answers 200 with JSON `{"answer": "..."}`, or `{"answer": null}` when it does not know.
"""

from __future__ import annotations

import hashlib
import hmac
import time

import httpx
import msgspec
import trio

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookError",
    "WebhookKnowledge",
    "sign",
]

TIMESTAMP_HEADER = "X-Hookline-Timestamp"
SIGNATURE_HEADER = "X-Hookline-Signature"


class WebhookError(Exception):
    """The webhook gave no usable answer; the message says why, in one line."""


class _Question(msgspec.Struct):
    question: str
    call_id: str


class _Answer(msgspec.Struct):
    answer: str | None = None


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Hookline-Signature` value for a request body sent at `timestamp`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


class WebhookKnowledge:
    """Asks the webhook through one pooled HTTP client (kept connections to the shop);
    `aclose()` releases it at shutdown (the tool set hands it to `ctx.on_close`)."""

    def __init__(self, url: str, secret: str, *, timeout_s: float, max_chars: int) -> None:
        self.url = url
        self._secret = secret
        self._timeout_s = timeout_s
        self._max_chars = max_chars
        self._client = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)
        self._decode = msgspec.json.Decoder(_Answer)

    async def ask(self, question: str, call_id: str) -> str | None:
        """The shop's answer, None when it does not know; WebhookError when it failed."""
        body = msgspec.json.encode(_Question(question=question, call_id=call_id))
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
        }
        timed_out = f"the knowledge webhook did not answer within {self._timeout_s:g} s"
        # httpx bounds each phase; the scope bounds the whole exchange (a server that
        # trickles bytes would otherwise reset the read timeout again and again).
        with trio.move_on_after(self._timeout_s) as scope:
            try:
                response = await self._client.post(self.url, content=body, headers=headers)
            except httpx.TimeoutException:
                raise WebhookError(timed_out) from None
            except httpx.HTTPError as e:
                raise WebhookError(f"cannot reach the knowledge webhook: {e!r}") from None
        if scope.cancelled_caught:
            raise WebhookError(timed_out)
        if response.status_code != 200:
            raise WebhookError(f"the knowledge webhook answered HTTP {response.status_code}")
        try:
            answer = self._decode.decode(response.content).answer
        except msgspec.DecodeError as e:
            raise WebhookError(f"the knowledge webhook's answer is not valid: {e}") from None
        if answer is None or not answer.strip():
            return None
        return answer.strip()[: self._max_chars]

    async def aclose(self) -> None:
        await self._client.aclose()

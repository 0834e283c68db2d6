"""Transfers that land: `<Dial timeout action>` and what its action callback answers.

The agent's transfer redirects the live call to `<Dial timeout=N action=.../transfer-result>`.
Twilio stops the media stream at once (the engine's call ends `transferred`), rings the
number, and when the Dial ends posts `DialCallStatus` to the action URL, signed like every
other request:

- `completed` (someone answered and the conversation is over): `<Hangup/>`.
- `no-answer`, `busy`, `failed`, `canceled`: `<Connect><Stream>` again, with a new stream
  token for the same CallSid, so the caller comes back to the agent. The runtime seeds
  the returning call with the conversation so far and the outcome (see
  `Runtime.record_status`), and the agent offers to take a message.

Only a CallSid this process transferred, within the ring time plus a margin, gets an
answer; a replayed or forged callback (even a validly signed old one) is refused 403, and
each transfer's callback is answered once.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import trio

from hookline import CallInfo

__all__ = ["ANSWERED", "PendingTransfer", "TransferBook", "outcome_of"]

# DialCallStatus values (Twilio's <Dial> action parameters).
ANSWERED = "completed"
NOT_ANSWERED = frozenset({"no-answer", "busy", "failed", "canceled"})
# Time for Twilio to stop the stream, start the Dial and call back after the ring time.
CALLBACK_MARGIN_S = 60.0
MAX_PENDING = 10_000  # bounded even if Twilio never calls back


@dataclass(frozen=True)
class PendingTransfer:
    info: CallInfo  # the call as the agent had it (hookline's call id, numbers)
    number: str
    expires: float


def outcome_of(dial_status: str, duration: str) -> str:
    """`answered` or what kept the person from answering (never empty)."""
    if dial_status == ANSWERED and duration not in ("", "0"):
        return "answered"
    if dial_status == ANSWERED:  # completed with no talk time: nobody really took it
        return "no-answer"
    return dial_status if dial_status in NOT_ANSWERED else "failed"


class TransferBook:
    """Transfers waiting for their Dial's action callback, by CallSid: one answer each."""

    def __init__(self) -> None:
        self._pending: OrderedDict[str, PendingTransfer] = OrderedDict()

    def expect(self, info: CallInfo, number: str, timeout_s: float) -> None:
        expires = trio.current_time() + timeout_s + CALLBACK_MARGIN_S
        self._pending.pop(info.provider_call_id, None)
        self._pending[info.provider_call_id] = PendingTransfer(info, number, expires)
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)

    def take(self, call_sid: str) -> PendingTransfer | None:
        """The transfer of `call_sid` if one is waiting and still due; it is then spent."""
        pending = self._pending.pop(call_sid, None)
        if pending is None or trio.current_time() > pending.expires:
            return None
        return pending

    def __len__(self) -> int:
        return len(self._pending)

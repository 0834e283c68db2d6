"""What a backend does: store and query bookings. The scheduling rules live elsewhere
(schedule.py) and the booking protocol (lock, verify, idempotency) in tools.py, so both
backends behave the same by construction."""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
from typing import Protocol

from .schedule import Booking

__all__ = ["SlotTaken", "Store", "call_logger", "current_logger"]

# The logger of the tool call being served (it carries the call id); set by the tools,
# read by the stores, so a retry logged deep in a backend still names its call.
call_logger: contextvars.ContextVar[logging.Logger | logging.LoggerAdapter | None] = (
    contextvars.ContextVar("calendar_call_logger", default=None)
)
_fallback = logging.getLogger("hookline.tools.calendar_google")


class SlotTaken(Exception):
    """`insert` found the booking's bay held by an overlapping booking. Only a store that
    can check this atomically with the write raises it (the local store); on Google the
    tools re-check after the insert instead."""

    def __init__(self, bay: int | None) -> None:
        super().__init__(f"bay {bay} is taken at that time")
        self.bay = bay


def current_logger() -> logging.Logger | logging.LoggerAdapter:
    return call_logger.get() or _fallback


class Store(Protocol):
    """Failures are raised as hookline's provider errors (`ProviderUnavailable`, ...)."""

    # True: `insert` checks the bay in the same transaction as the write (SlotTaken), so
    # the tools need not re-read the bay after a successful insert.
    checks_bays: bool

    async def bookings(self, lo: dt.datetime, hi: dt.datetime) -> list[Booking]:
        """Every live (not cancelled) event overlapping [lo, hi), start order."""
        ...

    async def by_phone(self, phone: str, after: dt.datetime) -> list[Booking]:
        """Live bookings made for `phone` that end after `after`, start order."""
        ...

    async def get(self, booking_id: str) -> Booking | None:
        """One booking, cancelled ones included; None when there is no such id."""
        ...

    async def insert(self, booking: Booking) -> Booking | None:
        """Store a booking under its id; None when that id exists (even cancelled).
        May raise `SlotTaken` (see there)."""
        ...

    async def cancel(self, booking_id: str) -> bool:
        """Cancel a booking (its id stays taken); False when it was already gone."""
        ...

    async def aclose(self) -> None: ...

    def warm(self) -> None:
        """Get ready before the first call, synchronously (runtime start-up)."""
        ...

    def close(self) -> None:
        """Release what the store holds, from synchronous code (runtime shutdown)."""
        ...

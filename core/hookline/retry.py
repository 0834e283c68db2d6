"""Retrying a provider request: one Retry-After parser, one bounded backoff, one loop.

Why not stamina or tenacity: both run under trio (they sleep through sniffio), but their
total deadline (`timeout=`, `stop_after_delay`) reads `time.monotonic()`, not trio's
clock, so it never fires on a `MockClock` and cannot be tested without real waiting;
stamina's backoff hook can return Retry-After but does not cap it. Making tenacity fit
means writing its stop, wait and retry callables ourselves (everything below but the
loop), so the loop is kept here instead of a dependency.

Whether to retry is decided by the error alone (`ProviderError.retryable`); how long to
wait by the `Backoff` and the server's `retry_after`; how long in all by the attempts
and the caller's deadline (trio time).
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import trio

from .errors import ProviderError

__all__ = ["Backoff", "parse_retry_after", "retry"]

T = TypeVar("T")


def parse_retry_after(value: str | bytes | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delay-seconds ("2", "0.5") or an
    HTTP-date (RFC 9110 §10.2.3), counted from `now` (wall-clock epoch seconds; default
    the current time). None when the header is absent or unreadable, so the caller
    falls back to its own backoff; a date in the past is 0."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 850/asctime forms carry no zone: HTTP dates are GMT
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True, slots=True)
class Backoff:
    """A bounded exponential backoff: `first_s`, doubling, never over `max_s`.

    attempts: tries in all, the first included (None: only the deadline bounds them).
    jitter: each computed wait is scaled by a random factor in [1 - jitter, 1], so many
        calls that failed together do not retry in step.
    max_retry_after_s: a server's Retry-After is obeyed up to this (None: `max_s`);
        it replaces the computed wait, it is not added to it.
    """

    first_s: float
    max_s: float
    attempts: int | None = None
    jitter: float = 0.0
    max_retry_after_s: float | None = None

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """The wait before retry number `retry` (1 is the first retry)."""
        if retry_after is not None:
            cap = self.max_s if self.max_retry_after_s is None else self.max_retry_after_s
            return min(retry_after, cap)
        try:
            wait = min(self.max_s, self.first_s * 2 ** (retry - 1))
        except OverflowError:
            wait = self.max_s
        if self.jitter:
            wait *= random.uniform(1.0 - self.jitter, 1.0)
        return wait


async def retry(
    attempt: Callable[[], Awaitable[T]],
    backoff: Backoff,
    *,
    what: str,
    log: logging.Logger | logging.LoggerAdapter,
    deadline: float = math.inf,
) -> T:
    """Await `attempt()` until it returns, retrying a ProviderError whose `retryable` is
    true. The last error is raised as it is when it is not retryable, when the attempts
    are spent, or when the next wait would end after `deadline` (trio time): no wait is
    started that cannot be followed by a try. Anything but a ProviderError propagates at
    once (the attempt translates what it knows)."""
    retries = 0
    while True:
        try:
            return await attempt()
        except ProviderError as error:
            if not error.retryable:
                raise
            retries += 1
            if backoff.attempts is not None and retries >= backoff.attempts:
                raise
            wait = backoff.delay(retries, error.retry_after)
            if trio.current_time() + wait > deadline:
                raise
            of = f" of {backoff.attempts - 1}" if backoff.attempts is not None else ""
            log.warning("%s failed (%s); retry %d%s in %.2f s", what, error, retries, of, wait)
            await trio.sleep(wait)

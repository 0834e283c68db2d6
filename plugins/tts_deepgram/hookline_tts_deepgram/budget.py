"""Deepgram ignores more than 20 Flush per 60 s on one socket: the sliding window that
keeps a socket under (the stream gives each socket its own)."""

from __future__ import annotations

from collections import deque

__all__ = ["FlushBudget"]


class FlushBudget:
    """At most `limit` flushes in any `window` seconds (a sliding window)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = max(1, limit)
        self.window = window
        self._times: deque[float] = deque()

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] >= self.window:
            self._times.popleft()

    def available(self, now: float) -> bool:
        return self.remaining(now) > 0

    def remaining(self, now: float) -> int:
        """How many more flushes may go out now."""
        self._trim(now)
        return max(0, self.limit - len(self._times))

    def record(self, now: float) -> None:
        self._times.append(now)

    def exhaust(self, now: float) -> None:
        """The server says we are over its limit: no flush for a whole window."""
        self._times = deque([now] * self.limit)

    def free_at(self, now: float) -> float:
        """When the next flush may go out."""
        self._trim(now)
        return now if len(self._times) < self.limit else self._times[0] + self.window

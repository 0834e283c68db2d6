"""Small trio helpers shared by the core and the plugins."""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import NoReturn

import trio

__all__ = ["held", "leaves", "reraise_single"]


class held:  # lower case: it reads as `async with held(lock):`
    """`async with held(lock):` holds a trio.Lock; a free one is taken without a trip
    through the scheduler.

    `async with lock:` yields to trio's scheduler even when the lock is free (trio's
    `acquire` is a checkpoint). On the media path that is a task step for every
    outbound message; here only a lock held by another task is waited for (a
    checkpoint, cancellable, as `acquire` is). A block without a checkpoint of its own
    then makes none at all: the loop around it must have one, as any loop must.
    """

    __slots__ = ("_lock",)

    def __init__(self, lock: trio.Lock) -> None:
        self._lock = lock

    async def __aenter__(self) -> None:
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._lock.release()


def leaves(error: BaseException) -> Iterator[BaseException]:
    """Every non-group exception inside `error` (itself when it is not a group)."""
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from leaves(inner)
    else:
        yield error


def reraise_single(group: BaseExceptionGroup) -> NoReturn:
    """Raise the one exception a nursery wrapped, unwrapped; raise the group otherwise.

    An async context manager that runs a nursery around its caller's block should give
    the caller back their own exception (a ProviderError, a Cancelled), not a group.
    """
    found = list(leaves(group))
    if len(found) == 1:
        exc = found[0]
        context = exc.__context__
        try:
            raise exc
        finally:
            exc.__context__ = context
            del exc, context
    raise group

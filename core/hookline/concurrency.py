"""Small trio helpers shared by the core and the plugins."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NoReturn

__all__ = ["leaves", "reraise_single"]


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

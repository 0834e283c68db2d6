"""The core's error and retry vocabulary: status mapping, Retry-After, backoff, loop."""

from __future__ import annotations

import email.utils
import logging
import math

import pytest
import trio
import trio.testing

from hookline.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderProtocolError,
    ProviderTimeout,
    ProviderUnavailable,
    error_for_status,
)
from hookline.retry import Backoff, parse_retry_after, retry

log = logging.getLogger("hookline.test.retry")


# ------------------------------------------------------------------ status mapping


@pytest.mark.parametrize("status", [401, 403])
def test_auth_statuses_are_auth_errors_with_the_hint(status: int) -> None:
    e = error_for_status(status, f"HTTP {status}", provider="x/y", auth_hint="set MY_KEY")
    assert type(e) is ProviderAuthError
    assert not e.retryable
    assert str(e) == f"x/y: HTTP {status}; set MY_KEY"


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_not_now_statuses_are_unavailable_and_retryable(status: int) -> None:
    e = error_for_status(status, "busy", provider="x/y", retry_after=2.5)
    assert type(e) is ProviderUnavailable
    assert e.retryable and e.retry_after == 2.5


@pytest.mark.parametrize("status", [400, 404, 409, 410, 422])
def test_other_statuses_are_refusals_not_retried(status: int) -> None:
    e = error_for_status(status, "no", provider="x/y")
    assert type(e) is ProviderError and not e.retryable
    e = error_for_status(
        status, "no", provider="x/y", refused=ProviderProtocolError, refused_hint="check z"
    )
    assert type(e) is ProviderProtocolError and not e.retryable
    assert str(e) == "x/y: no; check z"


def test_retryable_can_be_overridden_for_one_error() -> None:
    assert not error_for_status(503, "x", provider="p", retryable=False).retryable
    assert error_for_status(409, "x", provider="p", retryable=True).retryable
    assert ProviderUnavailable("x").retryable  # the kind's default is untouched
    assert not ProviderTimeout("t", retryable=False).retryable
    assert ProviderTimeout("t").retryable


# ------------------------------------------------------------------ Retry-After


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("2", 2.0), (" 120 ", 120.0), ("0.25", 0.25), (b"3", 3.0), ("0", 0.0)],
)
def test_retry_after_in_seconds(value: str | bytes, seconds: float) -> None:
    assert parse_retry_after(value) == seconds


def test_retry_after_as_an_http_date() -> None:
    now = 1_800_000_000.0
    later = email.utils.formatdate(now + 30, usegmt=True)  # "Fri, 15 Jan 2027 08:00:30 GMT"
    assert parse_retry_after(later, now=now) == pytest.approx(30.0)
    earlier = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(earlier, now=now) == 0.0  # already past: go now
    # Without `now`, the wall clock: a date a minute ahead is about a minute.
    import time

    ahead = parse_retry_after(email.utils.formatdate(time.time() + 60, usegmt=True))
    assert ahead is not None and 55 <= ahead <= 60


@pytest.mark.parametrize(
    "value", [None, "", "soon", "-1", "nan", "inf", "Fri, 99 Foo 2027 08:00:30 GMT"]
)
def test_unreadable_retry_after_is_none(value: str | None) -> None:
    assert parse_retry_after(value) is None


# ------------------------------------------------------------------ backoff


def test_backoff_doubles_up_to_the_cap() -> None:
    b = Backoff(first_s=0.5, max_s=3.0)
    assert [b.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert b.delay(10_000) == 3.0  # no overflow however long the outage


def test_backoff_obeys_retry_after_up_to_its_cap() -> None:
    b = Backoff(first_s=0.5, max_s=2.0)
    assert b.delay(1, retry_after=1.5) == 1.5  # replaces the backoff, even above it
    assert b.delay(1, retry_after=0.0) == 0.0
    assert b.delay(1, retry_after=60) == 2.0
    assert Backoff(0.5, 2.0, max_retry_after_s=3.0).delay(3, retry_after=60) == 3.0
    assert Backoff(0.5, 2.0, max_retry_after_s=math.inf).delay(1, retry_after=60) == 60


def test_backoff_jitter_stays_within_its_band() -> None:
    b = Backoff(first_s=1.0, max_s=8.0, jitter=0.25)
    waits = [b.delay(2) for _ in range(200)]
    assert all(1.5 <= w <= 2.0 for w in waits)
    assert len(set(waits)) > 1


# ------------------------------------------------------------------ the loop


class Flaky:
    """Raises the scripted errors in turn, then returns "ok"; records when it was tried."""

    def __init__(self, *errors: ProviderError) -> None:
        self.errors = list(errors)
        self.tried_at: list[float] = []

    async def __call__(self) -> str:
        self.tried_at.append(trio.current_time())
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def busy(retry_after: float | None = None) -> ProviderUnavailable:
    return ProviderUnavailable("busy", provider="x/y", retry_after=retry_after)


async def test_retries_retryable_errors_with_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flaky = Flaky(busy(), busy(), busy())
    start = trio.current_time()
    assert await retry(flaky, Backoff(0.5, 8.0, attempts=4), what="thing", log=log) == "ok"
    assert [round(t - start, 6) for t in flaky.tried_at] == [0.0, 0.5, 1.5, 3.5]


async def test_honours_retry_after(autojump_clock: trio.testing.MockClock) -> None:
    flaky = Flaky(busy(retry_after=2.0), busy(retry_after=30.0))
    start = trio.current_time()
    await retry(flaky, Backoff(0.5, 8.0, max_retry_after_s=3.0), what="thing", log=log)
    assert [round(t - start, 6) for t in flaky.tried_at] == [0.0, 2.0, 5.0]


async def test_a_non_retryable_error_is_raised_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    refused = ProviderAuthError("bad key")
    flaky = Flaky(refused)
    with pytest.raises(ProviderAuthError) as info:
        await retry(flaky, Backoff(0.5, 8.0), what="thing", log=log)
    assert info.value is refused and len(flaky.tried_at) == 1
    # `retryable` decides, not the kind: an unavailable marked not retryable is not retried.
    flaky = Flaky(ProviderTimeout("maybe done", retryable=False))
    with pytest.raises(ProviderTimeout):
        await retry(flaky, Backoff(0.5, 8.0), what="thing", log=log)
    assert len(flaky.tried_at) == 1


async def test_gives_up_after_the_attempts(autojump_clock: trio.testing.MockClock) -> None:
    last = busy()
    flaky = Flaky(busy(), busy(), last, busy())
    with pytest.raises(ProviderUnavailable) as info:
        await retry(flaky, Backoff(0.5, 8.0, attempts=3), what="thing", log=log)
    assert info.value is last and len(flaky.tried_at) == 3


async def test_never_waits_past_the_deadline(autojump_clock: trio.testing.MockClock) -> None:
    # Waits 0.5, 1, 2: the third would end at 3.5 s, past a 3 s deadline, so it is not
    # started and the error comes back at 1.5 s, not after sleeping into the deadline.
    flaky = Flaky(*(busy() for _ in range(10)))
    start = trio.current_time()
    with pytest.raises(ProviderUnavailable):
        await retry(flaky, Backoff(0.5, 8.0), what="thing", log=log, deadline=start + 3.0)
    assert [round(t - start, 6) for t in flaky.tried_at] == [0.0, 0.5, 1.5]
    assert trio.current_time() - start == pytest.approx(1.5)


async def test_a_retry_after_past_the_deadline_is_not_waited(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flaky = Flaky(busy(retry_after=5.0), busy())
    start = trio.current_time()
    with pytest.raises(ProviderUnavailable) as info:
        await retry(
            flaky, Backoff(0.5, 8.0, max_retry_after_s=math.inf), what="t", log=log,
            deadline=start + 1.0,
        )  # fmt: skip
    assert info.value.retry_after == 5.0  # the caller still sees the server's hint
    assert trio.current_time() == start


async def test_other_exceptions_pass_through(autojump_clock: trio.testing.MockClock) -> None:
    async def broken() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await retry(broken, Backoff(0.5, 8.0), what="thing", log=log)


async def test_each_retry_is_logged(autojump_clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=log.name)
    await retry(Flaky(busy()), Backoff(0.25, 1.0, attempts=3), what="hang-up", log=log)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == "hang-up failed (x/y: busy); retry 1 of 2 in 0.25 s"

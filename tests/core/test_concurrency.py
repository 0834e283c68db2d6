"""`held(lock)`: a free trio.Lock taken without a trip through the scheduler."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from hookline import held


async def test_a_free_lock_is_held_without_letting_another_task_run() -> None:
    lock, ran = trio.Lock(), []

    async def other() -> None:
        ran.append(True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        # `async with lock:` would let the started task run here (a checkpoint).
        async with held(lock):
            assert lock.locked() and ran == []
        assert not lock.locked() and ran == []
    assert ran == [True]


async def test_a_held_lock_is_waited_for_in_turn_and_released_on_error() -> None:
    lock, order = trio.Lock(), []

    async def take(name: str) -> None:
        async with held(lock):
            order.append(name)

    async with trio.open_nursery() as nursery:
        await lock.acquire()
        nursery.start_soon(take, "first")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(take, "second")
        await trio.testing.wait_all_tasks_blocked()
        assert order == []  # both wait while the lock is held
        lock.release()
    assert order == ["first", "second"]
    with pytest.raises(ValueError):
        async with held(lock):
            raise ValueError
    assert not lock.locked()


async def test_waiting_for_a_held_lock_can_be_cancelled() -> None:
    lock, cancelled = trio.Lock(), []

    async def wait_for_it() -> None:
        with trio.CancelScope() as scope:
            scope.cancel()
            async with held(lock):
                pytest.fail("the lock was never free")
        cancelled.append(scope.cancelled_caught)

    async with lock, trio.open_nursery() as nursery:
        nursery.start_soon(wait_for_it)
    assert cancelled == [True]
    assert not lock.locked()

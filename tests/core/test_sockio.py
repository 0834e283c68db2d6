"""SocketIO: syscall-first reads and writes on a plain socket (the media hot path)."""

from __future__ import annotations

import gc
import os

import pytest
import trio
import trio.testing

from hookline.sockio import FAIR_EVERY, SocketIO


def pair() -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    return trio.socket.socketpair()


async def test_reads_what_was_written_and_empty_bytes_at_end_of_stream() -> None:
    a, b = pair()
    with a, b:
        reader, writer = SocketIO(a), SocketIO(b)
        await writer.send_all(b"hello")
        assert await reader.receive(100) == b"hello"
        b.shutdown(trio.socket.SHUT_WR)
        assert await reader.receive(100) == b""


async def test_a_read_waits_for_data_without_spinning_or_keeping_an_exception() -> None:
    a, b = pair()
    with a, b:
        reader = SocketIO(a)
        got: list[bytes] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: _read_into(reader, got))
            await trio.testing.wait_all_tasks_blocked()
            assert got == []  # blocked in the event loop, not looping on EAGAIN
            # A reader waits between every 20 ms media frame. Waiting inside `except
            # BlockingIOError` kept the exception, its traceback and a frame object
            # alive all along: three objects per waiting call for each young collection.
            assert not [o for o in gc.get_objects() if isinstance(o, BlockingIOError)]
            await SocketIO(b).send_all(b"x")
        assert got == [b"x"]


async def test_after_a_read_that_emptied_the_buffer_the_next_one_waits_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A media reader is back for the next frame as soon as it has handled one, and a
    read then almost always finds nothing: a failed syscall and an exception per 20 ms
    frame. After a read that took less than it asked for, the next waits first."""
    reads: list[bytes | None] = []  # what each read syscall returned (None: nothing yet)
    read = os.read

    def counted(fd: int, n: int) -> bytes:
        try:
            data = read(fd, n)
        except BlockingIOError:
            reads.append(None)
            raise
        reads.append(data)
        return data

    monkeypatch.setattr(os, "read", counted)
    a, b = pair()
    with a, b:
        reader = SocketIO(a)
        await b.send(b"one")
        assert await reader.receive(10) == b"one"  # the first read is tried at once
        got: list[bytes] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: _read_into(reader, got))
            await trio.testing.wait_all_tasks_blocked()
            await b.send(b"two")
        assert got == [b"two"]
        assert reads == [b"one", b"two"]  # no read that found nothing
        # Data that came in before the next read is there at once, still without one.
        await b.send(b"three")
        assert await reader.receive(10) == b"three"
        # A read that filled what it asked for may have left more: the next one reads.
        await b.send(b"0123456789rest")
        assert await reader.receive(10) == b"0123456789"
        assert await reader.receive(10) == b"rest"
        assert reads == [b"one", b"two", b"three", b"0123456789", b"rest"]


async def _read_into(io: SocketIO, got: list[bytes]) -> None:
    got.append(await io.receive(10))


async def test_a_large_write_waits_for_room_and_arrives_whole() -> None:
    a, b = pair()
    data = bytes(range(256)) * 40_000  # ~10 MB: far more than the socket buffers hold
    with a, b:
        received = bytearray()

        async def drain() -> None:
            reader = SocketIO(a)
            while len(received) < len(data):
                received.extend(await reader.receive(65536))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            await SocketIO(b).send_all(data)
        assert bytes(received) == data


async def test_operations_that_never_block_still_let_other_tasks_run() -> None:
    a, b = pair()
    with a, b:
        reader, writer = SocketIO(a), SocketIO(b)
        others_ran = 0

        async def other() -> None:
            nonlocal others_ran
            while True:
                others_ran += 1
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            await trio.lowlevel.checkpoint()
            before = others_ran
            for _ in range(FAIR_EVERY * 4):  # each write fits the buffer, each read finds data
                await writer.send_all(b"y")
                assert await reader.receive(1) == b"y"
            assert others_ran > before
            nursery.cancel_scope.cancel()


async def test_a_cancelled_scope_stops_a_read_that_would_not_block() -> None:
    a, b = pair()
    with a, b:
        await SocketIO(b).send_all(b"data waiting")
        with trio.CancelScope() as scope:
            scope.cancel()
            await SocketIO(a).receive(100)
        assert scope.cancelled_caught


async def test_closing_the_socket_under_a_waiting_read_raises_oserror() -> None:
    a, b = pair()
    with b:
        errors: list[BaseException] = []

        async def read() -> None:
            try:
                await SocketIO(a).receive(10)
            except OSError as e:
                errors.append(e)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            a.close()
        assert len(errors) == 1


async def test_writing_to_a_closed_peer_raises_oserror() -> None:
    a, b = pair()
    with b:
        a.close()
        try:
            for _ in range(100):  # the first write may land in the buffer before the reset
                await SocketIO(b).send_all(b"z" * 1000)
        except OSError:
            return
        raise AssertionError("no OSError writing to a closed peer")


async def test_a_closed_socket_is_never_read_or_written_through_a_reused_fd() -> None:
    # The owner may close the socket while a task holding this SocketIO is between two
    # calls (woken, not yet run). The kernel hands the freed number to the next socket
    # opened, often another call's: a read must fail, not return that call's bytes.
    a, a_peer = pair()
    b, b_peer = pair()
    io = SocketIO(a)
    old_fd = a.fileno()
    a.close()
    with a_peer, b, b_peer:
        try:
            os.dup2(b.fileno(), old_fd)  # the old number now names another connection
            await SocketIO(b_peer).send_all(b"another call's audio")
            with pytest.raises(OSError):
                await io.receive(100)
            with pytest.raises(OSError):
                io.write_nowait(b"into another call")
            with pytest.raises(OSError):
                await io.send_all(b"into another call")
            assert await SocketIO(b).receive(100) == b"another call's audio"
        finally:
            os.close(old_fd)

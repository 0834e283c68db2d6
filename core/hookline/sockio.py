"""Reads and writes on a connected plain TCP socket, syscall first (the media hot path).

trio's socket calls yield to the scheduler after every send or receive that succeeds (a
checkpoint), on top of the wake-up when data arrives. On the media path that is a task
step for every 20 ms frame read and another for every frame written, per call: at 100
calls, thousands of scheduler passes a second that do nothing. Here the syscall is
tried first and the task waits in the event loop only when the kernel has no data (or
no room): one step per frame that arrives, none for a write that fits the socket buffer.

Cancellation is still checked on every call. A task whose reads and writes never block
would keep the loop to itself, so every FAIR_EVERY-th operation in a row without a wait
yields, as trio's own calls do every time.

For plain TCP only: a TLS stream has its own buffering (trio.SSLStream), used as it is.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Awaitable, Callable

import trio

__all__ = ["SocketIO"]

FAIR_EVERY = 16


class SocketIO:
    """Byte I/O on one connected non-blocking socket, owned by its stream.

    The stream keeps the socket open and closes it; this only reads and writes its file
    descriptor. One task reads and one task writes at a time (as for trio streams).
    Raises OSError when the connection is gone (reset, broken pipe, or the socket was
    closed while a call waited)."""

    __slots__ = ("_drained", "_fileno", "_unyielded")

    def __init__(self, sock: socket.socket | trio.socket.SocketType) -> None:
        # The descriptor is asked for at every call, never kept: the owner may close the
        # socket between two calls of a task, and the kernel gives the freed number to
        # the next socket opened (often another call's). A closed socket's fileno() is
        # -1, so the next syscall fails with EBADF (OSError: the connection is gone).
        self._fileno = sock.fileno
        self._unyielded = 0
        self._drained = False  # the last read took less than it asked for

    async def receive(self, max_bytes: int) -> bytes:
        """Up to `max_bytes` bytes; b"" at end of stream."""
        if self._drained:
            # The last read emptied the kernel's buffer (it took less than it asked for),
            # so a read now would almost always fail: a syscall and an exception for every
            # frame, as the reader comes back for the next one. Wait first; data that has
            # come in since wakes the wait at the loop's next pass.
            await self._wait(trio.lowlevel.wait_readable)
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                data = os.read(self._fileno(), max_bytes)
            except BlockingIOError:
                pass
            else:
                self._drained = 0 < len(data) < max_bytes
                await self._fair()
                return data
            # Waited for outside the `except`: inside it, the exception, its traceback
            # and this frame (made an object for the traceback) stay alive for the whole
            # wait, three more objects per waiting reader for every young collection to
            # walk.
            await self._wait(trio.lowlevel.wait_readable)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of `data`. Cancelled while waiting for room, part of it may have
        been written (as with trio's send_all): the connection is then unusable."""
        await trio.lowlevel.checkpoint_if_cancelled()
        total = len(data)
        sent = 0
        view: memoryview | None = None
        while True:
            try:
                if sent == 0:
                    sent = os.write(self._fileno(), data)
                else:
                    view = view if view is not None else memoryview(data)
                    sent += os.write(self._fileno(), view[sent:])
            except BlockingIOError:
                pass
            if sent >= total:
                break
            await self._wait(trio.lowlevel.wait_writable)
        await self._fair()

    def write_nowait(self, data: bytes | bytearray | memoryview) -> int:
        """Write what the socket takes now, without waiting or yielding; returns how
        many bytes that was (0 when its buffer is full)."""
        try:
            return os.write(self._fileno(), data)
        except BlockingIOError:
            return 0

    async def _wait(self, wait: Callable[[int], Awaitable[object]]) -> None:
        self._unyielded = 0
        try:
            await wait(self._fileno())
        except trio.ClosedResourceError:
            # Another task closed the socket: to the caller, the connection is gone.
            raise OSError(errno.EBADF, "the socket was closed") from None

    async def _fair(self) -> None:
        self._unyielded += 1
        if self._unyielded >= FAIR_EVERY:
            self._unyielded = 0
            await trio.lowlevel.cancel_shielded_checkpoint()

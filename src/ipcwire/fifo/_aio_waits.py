"""The asyncio FIFO writer's writes that wait: for the flock (another writer's long message,
or this one's own), for room in the FIFO, for what the transport still holds; each with the
send's deadline, and saying what is true when it passes (nothing sent, or cut after so many
bytes). :class:`ipcwire.fifo.aio.AioFifoChannel` writes a short message at once and comes here
only when something stands in its way."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from typing import Any

from ipcwire._deadline import not_seconds
from ipcwire.aio._timeouts import within
from ipcwire.errors import ChannelBroken, ChannelClosed, Timeout
from ipcwire.fifo import _notice as notice
from ipcwire.fifo._write_stream import lock_for, writer_busy
from ipcwire.pipe._aio_channel import AioPipeChannel
from ipcwire.pipe._aio_fd import FdTransport

__all__ = ["AioLockedWrites"]


class AioLockedWrites(AioPipeChannel):
    """A FIFO writer's sends that wait, in order and under the flock (see the module)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._big = asyncio.Lock()
        self._cut: str | None = None  # why sending is refused: a send cut a message
        self._waiting = 0  # sends in _locked_write (holding or waiting for _big)
        self._locked = False  # one of them holds the flock (see _write_end_closing)

    def _cut_short(self, written: int) -> str:
        self._cut = (
            f"a send to {self.url} was cut short after {written} bytes (a write of at most "
            f"PIPE_BUF bytes to a FIFO, which the kernel writes whole); the stream is out of "
            f"step, so open a new channel"
        )
        return self._cut

    async def _locked_write(self, data: Any, count: int, timeout: float | None) -> None:
        self._waiting += 1
        try:
            await self._locked_write_in_turn(data, count, timeout)
        finally:
            self._waiting -= 1

    async def _locked_write_in_turn(self, data: Any, count: int, timeout: float | None) -> None:
        how = lock_for(data)
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
        except TypeError:  # timeout="1": checked where it is first added (no cost else)
            raise not_seconds(timeout, self.url) from None
        t = self._fd_transport()
        assert t is not None
        async with self._big:
            fd = t.get_extra_info("pipe_fds")[1]
            if not isinstance(fd, int):  # the write side is gone: say why, as any send does
                self._write(data, count)
                raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
            if self._cut is not None and not self._closed:
                raise ChannelBroken(self._cut, endpoint=self.url)
            await self._flock(fd, deadline, timeout, how)
            self._locked = True
            try:
                await self._write_now(t, fd, data, count, deadline, timeout)
            finally:
                # (unless the transport closed the fd meanwhile: it let the lock go then,
                # and the number may be another file's by now)
                if self._locked and t._wfd == fd:
                    with contextlib.suppress(OSError):
                        fcntl.flock(fd, fcntl.LOCK_UN)
                self._locked = False

    async def _write_now(
        self,
        t: FdTransport,
        fd: int,
        data: Any,
        count: int,
        deadline: float | None,
        timeout: float | None,
    ) -> None:
        """Write ``data`` to ``fd`` (the FIFO, locked), waiting for room until ``deadline``.

        Raises:
            Timeout: nothing was written by the deadline, or only part (then the channel
                refuses to send again).
            ChannelClosed, ChannelBroken: as any send.
        """
        if self._closed or self._end is not None or t.is_closing() or t.write_error is not None:
            self._write(b"", 0)  # raises what any send raises then
        if t.get_write_buffer_size():  # what the transport holds (the handshake) goes first
            try:
                async with within(_left(deadline)):
                    await self._flushed_or_closed(t)
            except TimeoutError:
                raise self._not_sent(timeout) from None
        parts = [memoryview(p).cast("B") for p in (data if type(data) is tuple else (data,))]
        total = sum(p.nbytes for p in parts)
        written = 0
        room: int | None = None  # a copy of fd to wait on (see _room)
        try:
            while parts:
                try:
                    n = os.writev(fd, parts)
                except (BlockingIOError, InterruptedError):
                    n = 0
                except OSError:  # the reader is gone: the transport says so, as for any send
                    self._bytes_sent += written
                    self._write(b"".join(parts), count)
                    return
                written += n
                parts = _after(parts, n)
                if not parts:
                    break
                if room is None:
                    room = os.dup(fd)
                try:
                    await self._room(room, deadline)
                except TimeoutError:
                    raise (
                        self._cut_off(written, timeout) if written else self._not_sent(timeout)
                    ) from None
        finally:
            if room is not None:
                os.close(room)
        self._bytes_sent += total
        self._sent += count

    async def _room(self, fd: int, deadline: float | None) -> None:
        """Until the FIFO has room (``fd``: a copy of the transport's descriptor, so that
        waiting never touches the transport's own registration), or the channel closes.

        Raises:
            TimeoutError: at the deadline.
            ChannelClosed, ChannelBroken: the channel was closed, or the reader left.
        """
        woken = self._loop.create_future()

        def ready() -> None:
            if not woken.done():
                woken.set_result(None)

        self._loop.add_writer(fd, ready)
        self._drainers.append(woken)  # close() wakes it with ChannelClosed
        try:
            async with within(_left(deadline)):
                await woken
        finally:
            self._loop.remove_writer(fd)
            if woken in self._drainers:
                self._drainers.remove(woken)

    def _not_sent(self, timeout: float | None) -> Timeout:
        return Timeout(
            f"send to {self.url} did not start within {timeout} s: the peer is not reading "
            f"and the buffers are full; nothing was sent",
            endpoint=self.url,
        )

    def _cut_off(self, written: int, timeout: float | None) -> Timeout:
        self._cut = (
            f"an earlier send to {self.url} timed out part-way through a message; the stream "
            f"is out of step, so open a new channel"
        )
        return Timeout(
            f"send to {self.url} timed out after {written} bytes (the peer is not reading); "
            f"the channel cannot be used for sending any more",
            endpoint=self.url,
        )

    async def _flushed_or_closed(self, t: Any) -> None:
        """Until the transport ``t`` has written everything, or the channel closes: its
        ``close()`` wakes this wait at once with ChannelClosed, as it wakes the other
        senders' (``AioStreamChannel._drain``); the transport's own close would go on
        flushing to a reader that does not read, until ``aclose()`` aborts it (2 s).

        Raises:
            ChannelClosed: the channel was closed meanwhile.
        """
        flushed = asyncio.ensure_future(t.wait_flushed())
        try:
            while not flushed.done():
                woken = self._loop.create_future()  # closing (or room: look again)
                self._drainers.append(woken)
                try:
                    await asyncio.wait({flushed, woken}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if woken in self._drainers:
                        self._drainers.remove(woken)
                if woken.done() and (exc := woken.exception()) is not None:
                    raise exc
        finally:
            if not flushed.done():
                flushed.cancel()
        flushed.result()

    async def _flock(
        self, fd: int, deadline: float | None, timeout: float | None, how: int
    ) -> None:
        """Take the flock ``how`` on ``fd``, polling (a long message's exclusive one with its
        notice posted meanwhile: see :mod:`ipcwire.fifo._notice`).

        Raises:
            Timeout: another writer held it until the deadline.
        """
        tries = notice.FlockTries(fd, how)
        try:
            while not tries.take():
                if deadline is not None and time.monotonic() >= deadline:
                    raise writer_busy(self.url, timeout)
                await asyncio.sleep(tries.failed())
        finally:
            tries.close()


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)


def _after(parts: list[memoryview], n: int) -> list[memoryview]:
    """``parts`` without their first ``n`` bytes."""
    while n and parts:
        if n >= parts[0].nbytes:
            n -= parts[0].nbytes
            parts = parts[1:]
        else:
            parts = [parts[0][n:], *parts[1:]]
            n = 0
    return parts

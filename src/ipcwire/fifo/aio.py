"""``fifo:`` asyncio driver: the blocking driver's semantics, driven by the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import Iterable
from typing import Any

from ipcwire._core.url import Endpoint
from ipcwire._deadline import not_seconds
from ipcwire.aio._timeouts import within
from ipcwire.aio.channel import AioChannel, AioListener
from ipcwire.errors import ChannelBroken, ChannelClosed, ConfigurationError, Timeout
from ipcwire.fifo._options import DEFAULT_TIMEOUT, WRITERS, check_token, private
from ipcwire.fifo._path import (
    CreatedFifos,
    FifoPaths,
    client_busy,
    hold_session_once,
    lock_reply_once,
    no_reader,
    open_read,
    open_write_once,
    resolve,
    wait_open_write,
    writer_busy,
)
from ipcwire.options import ChannelOptions, file_mode, reject_unknown
from ipcwire.pipe._aio_fd import AioPipeChannel, FdTransport
from ipcwire.pipe._fdutil import PIPE_BUF
from ipcwire.pipe.aio import open_aio_channel

__all__ = ["AioFifoChannel", "connect", "listen"]


class AioFifoChannel(AioPipeChannel):
    """Every write holds a ``flock`` on the FIFO until it reached the kernel: exclusive for a
    message over PIPE_BUF bytes, shared for a shorter one (see
    :class:`ipcwire.fifo._path.FifoWriteStream`: a short message written without it could
    land inside another writer's long one).

    So a message is never left in the transport's buffer, to be written later without the
    lock: it is written straight to the FIFO, waiting for room, as the blocking send does,
    and a send that times out says what is true, with the blocking API's words: nothing was
    sent (the message never arrives: send it again), or the message was cut after so many
    bytes (the channel refuses to send again). It used to say "stayed unsent" while the
    transport delivered the message later, and a caller who sent it again got it twice.
    """

    def __init__(self, *args: Any, lock: bool = False, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._lock_writes = lock
        self._big = asyncio.Lock()
        self._cut: str | None = None  # why sending is refused: a send cut a message
        self._waiting = 0  # sends in _locked_write (holding or waiting for _big)

    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        t = self._fd_transport()
        if not self._lock_writes or t is None:
            await super().send(obj, timeout=timeout)
            return
        data = self._pack(obj)
        if not self._write_at_once(t, data, 1, timeout):
            await self._locked_write(data, 1, timeout)

    async def send_many(self, objs: Iterable[Any], *, timeout: float | None = None) -> None:
        t = self._fd_transport()
        if not self._lock_writes or t is None:
            await super().send_many(objs, timeout=timeout)
            return
        items = objs if isinstance(objs, list | tuple) else list(objs)
        if items:
            data = self._wire.pack_many(items)
            if not self._write_at_once(t, data, len(items), timeout):
                await self._locked_write(data, len(items), timeout)

    def _write_at_once(self, t: FdTransport, data: Any, count: int, timeout: Any) -> bool:
        """The usual send, without waiting: a message of up to PIPE_BUF bytes (frame
        included) written with one ``write`` under the shared flock, when nothing stands in
        its way. False, with nothing written, when something does: then
        :meth:`_locked_write` sends it, waiting and telling errors as always. In its way:
        another send of this channel under way (a long message holds the flock exclusively
        through the same open file, and sends go in their order), what the transport still
        holds, the channel closed or ended, the pipe full, the flock held by another
        writer's long message, a write error, a timeout that is not a plain number (the slow
        path says what is wrong with it)."""
        if (
            self._waiting
            or type(data) is tuple
            or len(data) > PIPE_BUF
            or self._closed
            or self._end is not None
            or self._cut is not None
            or t.is_closing()  # (else the transport has its write fd)
            or t.write_error is not None
            or t.get_write_buffer_size()
            or (timeout is not None and type(timeout) is not float and type(timeout) is not int)
        ):
            return False
        fd = t.get_extra_info("pipe_fds")[1]
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:  # a long message is being written (or an error the slow path tells)
            return False
        try:
            n = os.write(fd, data)
        except OSError:  # full (EAGAIN), or the reader left: the slow path waits or says so
            return False
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
        size = len(data)
        if n != size:  # POSIX: a pipe writes up to PIPE_BUF bytes whole or not at all
            self._bytes_sent += n
            raise ChannelBroken(self._cut_short(n), endpoint=self.url)
        self._bytes_sent += size
        self._sent += count
        return True

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
        size = len(data[0]) + memoryview(data[1]).nbytes if type(data) is tuple else len(data)
        how = fcntl.LOCK_EX if size > PIPE_BUF else fcntl.LOCK_SH
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
            try:
                await self._write_now(t, fd, data, count, deadline, timeout)
            finally:
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_UN)

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
        pause = 0.0005
        while True:
            try:
                fcntl.flock(fd, how | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise writer_busy(self.url, timeout) from None
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.01)


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


async def connect(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    timeout: float | None = None,
    writers: str = "many",
    **kw: Any,
) -> AioPipeChannel:
    """As :func:`ipcwire.fifo.blocking.connect` (waiting for a reader without blocking the
    loop).

    Raises:
        ConnectionRefused, PermissionDenied, ConfigurationError, AuthenticationFailed,
        HandshakeError, Timeout.
    """
    reject_unknown(kw, endpoint, ("timeout", "writers"))
    if writers not in WRITERS:
        raise ConfigurationError(f"writers={writers!r}: use 'many' or 'one'")
    paths = resolve(endpoint)
    check_token(options, paths)
    limit = DEFAULT_TIMEOUT if timeout is None else timeout
    deadline = time.monotonic() + limit
    rfd = None
    pause = 0.001
    # With reply=, first the client lock (one client at a time; see lock_reply_once): a
    # client waiting its turn must not be a writer yet.
    while paths.reply is not None and (rfd := lock_reply_once(paths.reply, endpoint.url)) is None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise client_busy(paths.reply, endpoint.url, limit)
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, 0.05)
    if rfd is not None and paths.reply is not None:
        rfd = private(rfd, paths.reply, options)
    pause = 0.001
    try:
        while (wfd := open_write_once(paths.path, endpoint.url)) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise no_reader(paths.path, endpoint.url, limit)
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 0.05)
        wfd = private(wfd, paths.path, options)
    except BaseException:
        if rfd is not None:
            os.close(rfd)
        raise
    return await open_aio_channel(
        rfd,
        wfd,
        options,
        role="client",
        handshake=True,
        read_to_eagain=True,
        channel_factory=AioFifoChannel,
        lock=writers == "many",
    )


async def listen(
    endpoint: Endpoint, options: ChannelOptions, *, mode: int = 0o600, **kw: Any
) -> AioFifoListener:
    """As :func:`ipcwire.fifo.blocking.listen`.

    Raises:
        AddressInUse, PermissionDenied, ConfigurationError.
    """
    reject_unknown(kw, endpoint, ("mode",))
    paths = resolve(endpoint)
    check_token(options, paths, file_mode(mode, endpoint.url))
    return AioFifoListener(endpoint.url, paths, options, mode=mode)


class _AioSession(AioPipeChannel):
    """A listener's channel: closing it lets the listener accept the next session."""

    def __init__(self, *args: Any, on_close: Any = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._on_close = on_close

    def close(self) -> None:
        super().close()
        if self._on_close is not None:
            self._on_close()


class AioFifoListener(AioListener):
    """The reading side of a FIFO, for asyncio (see the blocking listener)."""

    def __init__(self, url: str, paths: FifoPaths, options: ChannelOptions, *, mode: int) -> None:
        self.url = url
        self.paths = paths
        self._options = options
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._close_event = asyncio.Event()
        self._current: AioChannel | None = None
        self._session_done = asyncio.Event()
        self._created = CreatedFifos(paths, url, mode)
        try:
            self._rfd: int | None = private(open_read(paths.path, url), paths.path, options)
            self._keeper = open_read(paths.path, url) if paths.reply is None else None
        except BaseException:
            self._created.remove()
            raise

    async def accept(self, *, timeout: float | None = None) -> AioChannel:
        """The channel of the next writer session.

        Raises:
            Timeout, ChannelClosed: as the blocking listener.
        """
        if self._closed:
            raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
        wfd = None
        waiting_for_client = False
        try:
            async with within(timeout):  # one deadline for both waits, as the blocking one
                while self._current is not None and not self._current.closed:
                    self._session_done.clear()
                    await self._session_done.wait()  # a FIFO has one reader: wait for it
                    if self._closed:
                        raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
                if self._rfd is None:  # by path: checked again (it may have been replaced)
                    path = self.paths.path
                    self._rfd = private(open_read(path, self.url), path, self._options)
                rfd = self._rfd
                if self.paths.reply is not None:
                    waiting_for_client = True
                    wfd = await self._reply_reader()
        except TimeoutError:
            if waiting_for_client:
                raise Timeout(
                    f"no client connected to {self.url} within {timeout} s", endpoint=self.url
                ) from None
            raise Timeout(
                f"{self.url}: the channel accepted before is still open, and a FIFO has one "
                f"reader; close it to accept the next writers",
                endpoint=self.url,
            ) from None
        if self._closed:
            if wfd is not None:
                os.close(wfd)
            raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
        self._rfd = None
        ch = await open_aio_channel(
            rfd,
            wfd,
            self._options,
            role="server",
            handshake=True,
            read_to_eagain=True,
            channel_factory=_AioSession,
            on_close=self._session_done.set,
        )
        self._current = ch
        return ch

    async def _reply_reader(self) -> int:
        assert self.paths.reply is not None
        pause = 0.001
        while not self._closed:
            fd = wait_open_write(self.paths.reply, self.url, float("inf"))
            if fd is not None:
                break
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)
        else:
            raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
        # The session's share of the turn lock (see lock_reply_once); refused only while a
        # client is coming in. The caller's timeout bounds the wait.
        pause = 0.0005
        try:
            while not hold_session_once(fd):
                if self._closed:
                    raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.01)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_event.set()
        self._session_done.set()
        for fd in (self._rfd, self._keeper):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._rfd = self._keeper = None
        self._created.remove()

"""asyncio over a read fd and/or a write fd: one transport for both (the channel on it is
:class:`ipcwire.pipe._aio_channel.AioPipeChannel`).

asyncio's own pipe transports come one per direction and copy every read into a new bytes
object; :class:`FdTransport` reads straight into the channel's decoder (the same
``BufferedProtocol`` path as the socket mechanisms, so :class:`StreamProtocol` and its
handshake are reused unchanged) and writes with flow control. It also:

* watches an optional pidfd: when the child exits, what it left in the pipe is delivered and
  the stream ends, even if a grandchild still holds the pipe open;
* reads ahead while a send waits on a full pipe (the channel's pause request is deferred, up
  to ``max_readahead`` bytes), so two peers that both write before reading cannot deadlock;
* keeps a write failure (the peer closed its read end) separate from the read side, which
  still delivers what was sent before.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import sys
from collections.abc import Callable
from typing import Any, Final

from ipcwire._stream.aio_protocol import StreamProtocol
from ipcwire.pipe._fdutil import set_nonblocking

__all__ = ["FdTransport"]

_HIGH: Final = 256 * 1024  # write buffer size that pauses senders
_LOW: Final = 64 * 1024
# Linux: an empty FIFO that reads EAGAIN (not 0) has a writer, so it has met one since this
# end was opened, and epoll shows it the hang-up from then on (see FdTransport.__init__).
_EAGAIN_SHOWS_HUP: Final = sys.platform.startswith("linux")


class FdTransport(asyncio.Transport):
    """A transport over ``rfd`` and/or ``wfd`` (taken over and closed by the transport)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        rfd: int | None,
        wfd: int | None,
        protocol: StreamProtocol,
        *,
        watch: int | None = None,
        nonblocking: bool = True,
        restore: dict[int, int] | None = None,
        read_to_eagain: bool = False,
    ) -> None:
        super().__init__()
        # FIFOs: after data, read again, because a read end opened while no writer had the
        # FIFO open sees no hang-up in epoll until a writer opens it (fs/pipe.c: fifo_open
        # sets the end's f_pipe to w_counter only then; pipe_poll's EPOLLHUP needs them to
        # differ), and the listener keeps the FIFO open between sessions, so a session can
        # begin with the data of writers that all left: epoll shows the data, never the end;
        # a read of 0 does tell. On Linux this stops at the first EAGAIN: the FIFO has a
        # writer then, so one opened it after this end (or had it open before: f_pipe was
        # never set), and epoll shows the hang-up from then on. Elsewhere, after all data.
        self._read_to_eagain = read_to_eagain
        self._loop = loop
        self._rfd = rfd
        self._wfd = wfd
        self._watch = watch
        self._protocol = protocol
        self._restore = restore or {}
        self._wbuf = bytearray()
        self._writing = False  # a writer callback is registered
        self._protocol_paused = False  # we told the protocol to pause writing
        self._reading = False
        self._read_paused = False  # the protocol asked us to pause
        self._pause_deferred = False
        self._closing = False
        self._lost = False
        self._eof = False  # the read side ended with the end of stream
        self.write_error: OSError | None = None
        self.peer_exited = False
        self.readahead_ok: Callable[[], bool] | None = None
        self._flushed: list[asyncio.Future[None]] = []
        self.on_write_error: Callable[[OSError], None] | None = None
        # called with the write fd just before the transport closes it or hands it over
        # (a FIFO writer that holds a flock through it lets go first: see fifo/aio.py)
        self.on_close_write: Callable[[int], None] | None = None
        if nonblocking:
            for fd in (rfd, wfd):
                if fd is not None:
                    set_nonblocking(fd)

    def start(self) -> None:
        """Hand the transport to the protocol and start reading."""
        self._protocol.connection_made(self)
        if self._lost:
            return
        if self._rfd is not None:
            self._start_reading()
        elif self._wfd is not None:
            # A write-only end learns that the reader left: the fd polls readable (error).
            self._loop.add_reader(self._wfd, self._write_end_event)
        if self._watch is not None:
            self._loop.add_reader(self._watch, self._watch_ready)

    # -- reading --------------------------------------------------------------------------
    def _start_reading(self) -> None:
        if self._rfd is not None and not self._reading:
            self._loop.add_reader(self._rfd, self._read_ready)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._rfd is not None and self._reading:
            self._loop.remove_reader(self._rfd)
            self._reading = False

    def _read_ready(self) -> int:
        rfd = self._rfd
        if rfd is None:
            return -1
        buf = self._protocol.get_buffer(-1)
        try:
            n = os.readv(rfd, (buf,))
        except BlockingIOError:
            if _EAGAIN_SHOWS_HUP:
                self._read_to_eagain = False  # (see __init__)
            return -1
        except InterruptedError:
            return -1
        except OSError as exc:
            self._fatal(exc)
            return 0
        if n == 0:
            self._read_eof()
            return 0
        self._protocol.buffer_updated(n)
        if self._read_to_eagain and self._reading and self._rfd is not None:
            self._loop.call_soon(self._read_again)
        return n

    def _read_again(self) -> None:
        if self._reading:
            self._read_ready()

    def _read_eof(self) -> None:
        self._eof = True
        self._stop_reading()
        fd, self._rfd = self._rfd, None
        if fd is not None:
            self._close_fd(fd)
        self._protocol.eof_received()
        if self._wfd is not None and not self.peer_exited and self.write_error is None:
            self.close()  # flush what we wrote, then report the end
        else:
            self._abort_writes()
            self._maybe_lost(None)

    def _watch_ready(self) -> None:
        """The child exited: deliver what it left in the pipe, then end the stream."""
        if self._watch is not None:
            self._loop.remove_reader(self._watch)
            self._watch = None
        self.peer_exited = True
        while self._rfd is not None and self._read_ready() > 0:
            pass
        if self._rfd is not None:  # a grandchild holds the pipe open: the end anyway
            self._read_eof()

    def _write_end_event(self) -> None:
        if self._wfd is not None:
            self._loop.remove_reader(self._wfd)
        self._write_failed(BrokenPipeError(errno.EPIPE, "the reading end was closed"))

    # -- flow control (reading) ------------------------------------------------------------
    def pause_reading(self) -> None:
        if self._read_paused:
            return
        self._read_paused = True
        if self._protocol_paused and self.readahead_ok is not None and self.readahead_ok():
            self._pause_deferred = True  # a send is waiting: keep reading, no deadlock
            return
        self._stop_reading()

    def resume_reading(self) -> None:
        self._read_paused = False
        self._pause_deferred = False
        if not self._closing and not self._reading:
            self._start_reading()
            if self._read_to_eagain:  # the read that paused may have taken the last data
                self._loop.call_soon(self._read_again)

    def is_reading(self) -> bool:
        return self._reading

    # -- writing ----------------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        wfd = self._wfd
        if wfd is None or self._closing or self.write_error is not None:
            return
        if not self._wbuf:
            try:
                n = os.write(wfd, data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:
                self._write_failed(exc)
                return
            if n == len(data):
                return
            data = memoryview(data)[n:]
            self._loop.add_writer(wfd, self._write_ready)
            self._writing = True
        self._wbuf += data
        self._check_high()

    def writelines(self, parts: Any) -> None:
        parts = list(parts)
        wfd = self._wfd
        if wfd is None or self._closing or self.write_error is not None:
            return
        if self._wbuf:
            for p in parts:
                self._wbuf += p
            self._check_high()
            return
        views = [memoryview(p).cast("B") for p in parts]
        try:
            n = os.writev(wfd, views)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as exc:
            self._write_failed(exc)
            return
        for v in views:
            if n >= v.nbytes:
                n -= v.nbytes
                continue
            self._wbuf += v[n:]
            n = 0
        if self._wbuf:
            self._loop.add_writer(wfd, self._write_ready)
            self._writing = True
            self._check_high()

    def _check_high(self) -> None:
        if len(self._wbuf) > _HIGH and not self._protocol_paused:
            self._protocol_paused = True
            self._protocol.pause_writing()
            if self._read_paused and self.readahead_ok is not None and self.readahead_ok():
                self._pause_deferred = True
                self._start_reading()

    def _write_ready(self) -> None:
        wfd = self._wfd
        if wfd is None:
            return
        try:
            n = os.write(wfd, self._wbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._write_failed(exc)
            return
        del self._wbuf[:n]
        if not self._wbuf:
            self._loop.remove_writer(wfd)
            self._writing = False
            self._wake_flushed()
            if self._closing:
                self._close_write()
                self._maybe_lost(None)
        if self._protocol_paused and len(self._wbuf) <= _LOW:
            self._protocol_paused = False
            if self._pause_deferred:
                self._pause_deferred = False
                self._stop_reading()
            self._protocol.resume_writing()

    def _write_failed(self, exc: OSError) -> None:
        self.write_error = exc
        self._abort_writes()
        if self.on_write_error is not None:
            self.on_write_error(exc)
        if self._rfd is None or self._closing:
            # The end of a write-only transport is this error; one whose read side met the end
            # of stream ends as that end (the error is the send's, told through write_error),
            # as on the blocking API: the next recv() is EndOfChannel, not ChannelBroken.
            self._maybe_lost(exc if self._rfd is None and not self._eof else None)

    def _abort_writes(self) -> None:
        self._wbuf.clear()
        self._close_write()
        self._wake_flushed()

    async def wait_flushed(self) -> None:
        """Wait until everything written so far is in the kernel (or writing failed)."""
        if self._wbuf:
            fut = self._loop.create_future()
            self._flushed.append(fut)
            await fut

    def _wake_flushed(self) -> None:
        for fut in self._flushed:
            if not fut.done():
                fut.set_result(None)
        self._flushed.clear()

    def _close_write(self) -> None:
        wfd = self._wfd
        if wfd is not None and self.on_close_write is not None:
            self.on_close_write(wfd)
        self._wfd = None
        if wfd is not None:
            if self._writing:
                self._loop.remove_writer(wfd)
                self._writing = False
            if self._rfd is None:
                self._loop.remove_reader(wfd)
            self._close_fd(wfd)

    def get_write_buffer_size(self) -> int:
        return len(self._wbuf)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Close the write side once the buffer is flushed (the peer reads end of stream)."""
        if not self._wbuf:
            self._close_write()

    # -- closing ----------------------------------------------------------------------------
    def is_closing(self) -> bool:
        return self._closing or self._wfd is None

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._stop_reading()
        fd, self._rfd = self._rfd, None
        if fd is not None:
            self._close_fd(fd)
        if not self._wbuf:
            self._close_write()
        self._maybe_lost(None)

    def detach_read(self) -> int | None:
        """Stop reading and hand the read fd to the caller (the shutdown ladder drains it)."""
        self._stop_reading()
        fd, self._rfd = self._rfd, None
        if fd is not None:
            self._restore.pop(fd, None)
        return fd

    def steal_fds(self) -> tuple[int | None, int | None]:
        """Take the fds without touching the loop (it may be closed: interpreter exit)."""
        if self._wfd is not None and self.on_close_write is not None:
            self.on_close_write(self._wfd)
        fds = (self._rfd, self._wfd)
        self._rfd = self._wfd = None
        self._reading = self._writing = False
        self._lost = True
        return fds

    def close_without_loop(self, last: bytes) -> None:
        """Close the fds without touching the loop (it has ended): ``last`` (a goodbye) is
        written first when nothing is left unsent and it fits in the pipe now (it is shorter
        than ``PIPE_BUF``: all of it or nothing); what was still buffered is dropped."""
        unsent = bool(self._wbuf)
        rfd, wfd = self.steal_fds()
        self._closing = True
        if wfd is not None and last and not unsent:
            with contextlib.suppress(OSError):
                os.write(wfd, last)
        for fd in (rfd, wfd):
            if fd is not None:
                self._close_fd(fd)

    def abort(self) -> None:
        self._closing = True
        self._stop_reading()
        fd, self._rfd = self._rfd, None
        if fd is not None:
            self._close_fd(fd)
        self._abort_writes()
        self._maybe_lost(None)

    def _fatal(self, exc: OSError) -> None:
        self._closing = True
        self._stop_reading()
        fd, self._rfd = self._rfd, None
        if fd is not None:
            self._close_fd(fd)
        self._abort_writes()
        self._maybe_lost(exc)

    def _maybe_lost(self, exc: Exception | None) -> None:
        if self._lost or self._rfd is not None or self._wfd is not None:
            return
        self._lost = True
        if self._watch is not None:
            self._loop.remove_reader(self._watch)
            self._watch = None
        self._loop.call_soon(self._protocol.connection_lost, exc)

    def _close_fd(self, fd: int) -> None:
        flags = self._restore.pop(fd, None)
        if flags is not None:
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, fcntl.F_SETFL, flags)
        with contextlib.suppress(OSError):
            os.close(fd)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"pipe_fds": (self._rfd, self._wfd)}.get(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        raise NotImplementedError("FdTransport keeps its protocol")

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

"""The blocking byte stream over pipe fds, shared by the pipe, fifo and spawn mechanisms.

:class:`FdStream` is the blocking :class:`~ipcwire._stream.transport.ByteStream` over a read fd
and/or a write fd (an anonymous pipe, a FIFO, a child's stdin/stdout). Waits use ``poll``, so
every read and write honours its timeout, and a *waker* (an eventfd, or a pipe where there is
none) is part of every wait, so :meth:`FdStream.close` wakes a thread blocked in ``recv`` or
``send`` at once. Reading a pipe whose fd another thread closes is a classic race (the fd
number can be reused by an unrelated ``open``); here an fd is only ever closed by the thread
that holds its lock, so no syscall runs on a closed or recycled fd.

Two optional hooks make child processes safe to talk to:

* ``watch``: an fd that becomes readable when the peer process exits (a Linux pidfd). A read
  that finds the pipe empty after that reports end of stream, even when a grandchild still
  holds the pipe's write end open (the classic "close() hangs" of stdio clients).
* ``readahead``: called while a send is blocked on a full pipe and the read side has data.
  The channel reads into its own buffer, so a peer that is blocked writing its replies can
  go on reading our request: the "write 100 MB while the child echoes it" deadlock cannot
  happen even when the caller only receives after sending.

The small fd helpers (making pipes, fd flags, the :class:`~ipcwire.pipe._fdutil.Waker` that
every wait here includes) are in :mod:`ipcwire.pipe._fdutil`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Final

from ipcwire._core.wire import Packed
from ipcwire._poll import poll_ms, wait_readable
from ipcwire._stream.transport import ByteStream, PartialWrite
from ipcwire.errors import LocalProtocolError
from ipcwire.pipe._fdutil import Waker, set_nonblocking

__all__ = ["FdStream"]

_IN: Final = select.POLLIN | select.POLLHUP | select.POLLERR
_OUT: Final = select.POLLOUT | select.POLLHUP | select.POLLERR
_monotonic = time.monotonic


class _Closed(OSError):
    """The stream was closed by this side while waiting (the channel says ChannelClosed)."""

    def __init__(self) -> None:
        super().__init__(errno.EBADF, "closed by this side")


_ms = poll_ms  # (a wait over poll()'s longest returns early, and the caller waits again)


class FdStream(ByteStream):
    """A byte stream over ``rfd`` (may be None: write-only) and ``wfd`` (None: read-only).

    The stream owns the fds and closes them. ``nonblocking`` puts them in O_NONBLOCK mode,
    which makes every timeout exact; only do that for descriptions nobody else shares (pipes
    and FIFOs we opened). ``restore`` maps fd -> file status flags to put back before closing
    (for descriptions that are shared, such as a process's own stdin/stdout). ``poll_first``
    never reads before poll reports data or hang-up the first time: a FIFO with no writer
    *yet* reads as end of stream, while poll waits for the first writer. After that, reads
    come first (a writer that wrote and left before this end was opened shows no hang-up to
    poll, but a read of 0 does tell that no writer is left).
    """

    def __init__(
        self,
        rfd: int | None,
        wfd: int | None,
        *,
        endpoint: str,
        nonblocking: bool = True,
        watch: int | None = None,
        restore: dict[int, int] | None = None,
        poll_first: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self._can_read = rfd is not None
        self._can_write = wfd is not None
        self._fast_read = nonblocking and not poll_first
        self._read_first = poll_first  # FIFOs: once armed, always read first (see above)
        self._hot = True
        self.rfd = rfd
        self.wfd = wfd
        self.watch = watch
        self.peer_exited = False  # set when the watch fd fired
        self.readahead: Callable[[], bool] | None = None
        # Called before this stream closes (or hands away) its read or write fd: a channel's
        # C fast paths (``_ext/stream.c``) use the fds directly, and stop here.
        self.read_guard: Callable[[], None] | None = None
        self.write_guard: Callable[[], None] | None = None
        # Called once, when a stream that polls first (a FIFO) sees its first writer.
        self.on_armed: Callable[[], None] | None = None
        self._restore = restore or {}
        self._nonblocking = nonblocking
        self._closed = False
        self._rlock = threading.Lock()
        self._wlock = threading.Lock()
        self._orphan_read = False  # close() gave up waiting: the reader closes on its way out
        self._orphan_write = False
        self._waker: Waker | None = Waker(endpoint)
        self._owner = os.getpid()  # a forked child's close() leaves the parent's stream alone
        waker_fd = self._waker.fd
        if nonblocking:
            for fd in (rfd, wfd):
                if fd is not None:
                    set_nonblocking(fd)
        self._rpoll = select.poll()
        self._rpoll.register(waker_fd, select.POLLIN)
        if rfd is not None:
            self._rpoll.register(rfd, select.POLLIN)
        if watch is not None:
            self._rpoll.register(watch, select.POLLIN)
        self._wpoll = select.poll()
        self._wpoll.register(waker_fd, select.POLLIN)
        if wfd is not None:
            self._wpoll.register(wfd, select.POLLOUT)
        if watch is not None and wfd is not None:  # a full pipe of a peer that exited
            self._wpoll.register(watch, select.POLLIN)
        self._wpoll_ra: select.poll | None = None  # write wait that also watches rfd

    # -- ByteStream -----------------------------------------------------------------------
    def fileno(self) -> int:
        fd = self.rfd if self.rfd is not None else self.wfd
        return -1 if fd is None else fd

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def nonblocking(self) -> bool:
        """The fds are in O_NONBLOCK mode (every write either fits or is refused at once)."""
        return self._nonblocking

    @property
    def reads_first(self) -> bool:
        """A read may come before any poll (not a FIFO still waiting for its first writer)."""
        return self._fast_read

    @property
    def polls_first(self) -> bool:
        """Opened with ``poll_first`` (a FIFO): once armed, every read comes before a poll."""
        return self._read_first

    def wake_fds(self) -> tuple[int, ...]:
        """The fds besides the read fd that end a wait for input: the close waker and the
        ``watch`` fd (their firing means: ask :meth:`recv_into`)."""
        fds = [] if self._waker is None else [self._waker.fd]
        if self.watch is not None:
            fds.append(self.watch)
        return tuple(fds)

    def recv_into(self, view: memoryview, timeout: float | None) -> int:
        if not self._can_read:
            raise LocalProtocolError(
                f"{self.endpoint} is the sending end of a one-way channel; receive at the "
                f"other end",
                endpoint=self.endpoint,
            )
        with self._rlock:
            rfd = self.rfd
            if self._fast_read and rfd is not None and (self._hot or self._read_first):
                try:  # data is likely there already (the last read filled the buffer)
                    n = os.readv(rfd, (view,))
                    self._hot = n == view.nbytes
                    return n
                except BlockingIOError:
                    self._hot = False  # ping-pong: poll first next time (one syscall less)
                    if timeout == 0:
                        raise
            try:
                return self._recv(view, timeout)
            finally:
                if self._orphan_read:  # close() could not wait for us: we close it
                    self._close_read()

    def _recv(self, view: memoryview, timeout: float | None) -> int:
        rfd = self.rfd
        if self._closed or rfd is None:
            raise _Closed
        deadline = None if timeout is None else _monotonic() + timeout
        wait = timeout
        while True:
            events = self._rpoll.poll(_ms(wait))
            if self._closed:
                raise _Closed
            exited = False
            for fd, ev in events:
                if ev & select.POLLNVAL:
                    raise _Closed
                if fd == rfd and ev & _IN:
                    try:
                        n = os.readv(rfd, (view,))
                    except BlockingIOError:
                        continue  # spurious (another reader took it); wait again
                    # A writer has been here: from now on a read of 0 means they all left
                    # (before, on a FIFO, it only meant that none had come yet).
                    self._fast_read = self._nonblocking
                    armed, self.on_armed = self.on_armed, None
                    if armed is not None:
                        armed()
                    self._hot = n == view.nbytes
                    return n
                elif fd == self.watch:
                    exited = True
            if exited:
                return self._drain_after_exit(rfd, view)
            if deadline is not None:
                wait = deadline - _monotonic()
                if wait <= 0:
                    raise TimeoutError

    def _drain_after_exit(self, rfd: int, view: memoryview) -> int:
        """The peer process exited: return what it left in the pipe, then end of stream."""
        self.peer_exited = True
        if self.watch is not None:
            try:
                self._rpoll.unregister(self.watch)
            except (KeyError, ValueError):
                pass
            self.watch = None
        try:
            if not self._nonblocking and not wait_readable(rfd, 0):
                return 0
            return os.readv(rfd, (view,))
        except BlockingIOError:
            return 0  # nothing left, and a grandchild may hold the pipe open: the end

    def send_all(self, data: Packed, timeout: float | None) -> None:
        if not self._can_write:
            raise LocalProtocolError(
                f"{self.endpoint} is the receiving end of a one-way channel; send from the "
                f"other end",
                endpoint=self.endpoint,
            )
        with self._wlock:
            try:
                self._send_all_locked(data, timeout)
            finally:
                if self._orphan_write:
                    self._close_write()

    def _send_all_locked(self, data: Packed, timeout: float | None) -> None:
        """:meth:`send_all` for a caller that holds the write lock."""
        wfd = self.wfd
        if self._nonblocking and wfd is not None and type(data) is not tuple:
            try:  # the hot path: one write that fits in the pipe
                n = os.write(wfd, data)  # type: ignore[arg-type]
            except BlockingIOError:
                n = 0
            if n == len(data):
                return
            data = memoryview(data)[n:]  # type: ignore[arg-type]
        else:
            n = 0
        self._send(data, timeout, n)

    def _send(self, data: Packed, timeout: float | None, written: int) -> None:
        """Write everything; ``written`` bytes of the message went out already."""
        wfd = self.wfd
        if self._closed or wfd is None:
            raise _Closed
        parts = data if type(data) is tuple else (data,)
        views = [memoryview(p).cast("B") for p in parts]  # type: ignore[arg-type]
        deadline = None if timeout is None else _monotonic() + timeout
        wait = timeout
        while True:
            # Blocking descriptions (a terminal) are written only once poll says writable.
            if self._nonblocking or self._wait_writable(wfd, wait):
                try:
                    n = os.writev(wfd, views) if len(views) > 1 else os.write(wfd, views[0])
                except BlockingIOError:
                    n = 0
                written += n
                while views and n >= views[0].nbytes:
                    n -= views[0].nbytes
                    views.pop(0)
                if not views:
                    return
                if n:
                    views[0] = views[0][n:]
                if deadline is not None:
                    wait = deadline - _monotonic()
                if (wait is None or wait > 0) and (
                    not self._nonblocking or self._wait_writable(wfd, wait)
                ):
                    continue
            if written:
                raise PartialWrite(written)
            raise BlockingIOError(errno.EAGAIN, "pipe full")

    def _wait_writable(self, wfd: int, wait: float | None) -> bool:
        """Wait until ``wfd`` is writable (True) or ``wait`` passes (False); meanwhile read
        ahead on the read side while the channel wants it.

        Raises:
            BrokenPipeError: the peer process exited (the ``watch`` fired): the pipe is full
                and only a process it left holding the pipe (a grandchild) could empty it.
                Before, such a send waited out its timeout, or for ever without one (the
                asyncio transport ends its writes when the child exits).
        """
        deadline = None if wait is None else _monotonic() + wait
        ra = self.readahead if self.rfd is not None else None
        while True:
            if self.peer_exited:
                raise BrokenPipeError(errno.EPIPE, "the peer process exited")
            poller = self._poll_with_read() if ra is not None else self._wpoll
            events = poller.poll(_ms(wait))
            if self._closed:
                raise _Closed
            writable = False
            for fd, ev in events:
                if ev & select.POLLNVAL:
                    raise _Closed
                if fd == wfd and ev & _OUT:
                    writable = True
                elif fd == self.rfd and ev & _IN and ra is not None and not ra():
                    ra = None  # the channel is reading itself, or its buffer is full
                elif fd == self.watch and self.watch is not None:
                    self.peer_exited = True  # (recv still reads what the peer left)
            if writable:
                return True
            if deadline is not None:
                wait = deadline - _monotonic()
                if wait <= 0:
                    return False

    def _poll_with_read(self) -> select.poll:
        if self._wpoll_ra is None:
            p = select.poll()
            assert self._waker is not None
            p.register(self._waker.fd, select.POLLIN)
            assert self.wfd is not None
            assert self.rfd is not None
            p.register(self.wfd, select.POLLOUT)
            p.register(self.rfd, select.POLLIN)
            if self.watch is not None:
                p.register(self.watch, select.POLLIN)
            self._wpoll_ra = p
        return self._wpoll_ra

    def read_nowait(self, view: memoryview) -> int | None:
        """One non-blocking read for read-ahead (the caller holds the channel's receive lock):
        bytes read, 0 at end of stream, None when nothing is there."""
        rfd = self.rfd
        if rfd is None or self._closed:
            return None
        try:
            return os.readv(rfd, (view,))
        except BlockingIOError:
            return None

    # -- closing ----------------------------------------------------------------------------
    def close_write(self) -> None:
        """Close the write side only (the peer reads end of stream); idempotent.

        A write in progress is interrupted only by :meth:`close`; this waits for it (bounded)
        and otherwise leaves the closing to that writer.
        """
        if self.write_guard is not None:
            self.write_guard()
        self._closing_locked(self._wlock, self._close_write, "_orphan_write")

    def shutdown(self) -> None:
        self.close_write()

    def close(self) -> None:
        """Close both fds; wakes threads blocked in recv/send. Idempotent, bounded."""
        self._close(detach_read=False)

    def close_detaching_read(self) -> int | None:
        """As :meth:`close`, but the read fd is not closed: it is returned (once no thread
        uses it) to a caller that drains it (the spawn shutdown ladder)."""
        return self._close(detach_read=True)

    def _close(self, *, detach_read: bool) -> int | None:
        if self._closed:
            return None
        self._closed = True
        for guard in (self.read_guard, self.write_guard):
            if guard is not None:
                guard()
        if os.getpid() != self._owner:
            # A forked child's copy: the parent's threads may wait on the waker (nobody would
            # read it: their waits would spin) and hold the locks, and the fds' flags are
            # shared with the parent's. Only our descriptors are closed.
            self._restore.clear()
            fd = self.rfd if detach_read else None
            if fd is not None:
                self.rfd = None
            self._close_read()
            self._close_write()
            return fd
        if self._waker is not None:
            self._waker.wake()
        detached: list[int] = []

        def close_read() -> None:
            if detach_read and self.rfd is not None:
                detached.append(self.rfd)
                self._restore.pop(self.rfd, None)
                self.rfd = None
            self._close_read()

        # An fd is closed only by whoever holds its lock: here once the thread using it has
        # left (it was just woken), or, if it does not leave in time (a blocking write to a
        # terminal), by that thread on its way out. Never while a syscall may still use it.
        self._closing_locked(self._rlock, close_read, "_orphan_read")
        self._closing_locked(self._wlock, self._close_write, "_orphan_write")
        return detached[0] if detached else None

    def _closing_locked(self, lock: threading.Lock, closer: Callable[[], None], flag: str) -> None:
        if not lock.acquire(timeout=1.0):
            setattr(self, flag, True)
            if not lock.acquire(blocking=False):
                return  # still busy: it will see the flag
        try:
            closer()
        finally:
            lock.release()

    def _close_fd(self, fd: int) -> None:
        flags = self._restore.pop(fd, None)
        try:
            if flags is not None:
                fcntl.fcntl(fd, fcntl.F_SETFL, flags)
        except OSError:
            pass
        try:
            os.close(fd)
        except OSError:
            pass

    def _close_read(self) -> None:
        if self.rfd is not None:
            self._close_fd(self.rfd)
            self.rfd = None
        self.watch = None  # owned by whoever created it
        self._maybe_close_waker()

    def _close_write(self) -> None:
        if self.wfd is not None:
            self._close_fd(self.wfd)
            self.wfd = None
        self._maybe_close_waker()

    def _maybe_close_waker(self) -> None:
        if self._closed and self.rfd is None and self.wfd is None and self._waker is not None:
            self._waker.close()
            self._waker = None

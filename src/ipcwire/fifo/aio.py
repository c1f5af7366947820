"""``fifo:`` asyncio driver: the blocking driver's semantics, driven by the event loop."""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from collections.abc import Iterable
from typing import Any, Final

from ipcwire._core.url import Endpoint
from ipcwire.errors import ChannelBroken, ConfigurationError
from ipcwire.fifo import _notice as notice
from ipcwire.fifo._aio_listener import AioFifoListener
from ipcwire.fifo._aio_waits import AioLockedWrites
from ipcwire.fifo._options import DEFAULT_TIMEOUT, WRITERS, check_token, private
from ipcwire.fifo._path import (
    client_busy,
    lock_reply_once,
    no_reader,
    open_write_once,
    resolve,
)
from ipcwire.options import ChannelOptions, file_mode, reject_unknown
from ipcwire.pipe._aio_channel import AioPipeChannel
from ipcwire.pipe._aio_fd import FdTransport
from ipcwire.pipe._fdutil import PIPE_BUF
from ipcwire.pipe.aio import open_aio_channel

__all__ = ["LOOK_EVERY", "AioFifoChannel", "AioFifoListener", "connect", "listen"]

_running_loop = asyncio._get_running_loop  # (the loop running in this thread, or None)

# Short messages a channel writes under the flock it keeps for the turn between two looks for
# a long writer's notice (one F_OFD_GETLK each: about 20 ns a message; a long writer waits at
# most this many of them, or until the task yields, before this channel locks per message).
LOOK_EVERY: Final = 64


class AioFifoChannel(AioLockedWrites):
    """Every write holds a ``flock`` on the FIFO until it reached the kernel: exclusive for a
    message over PIPE_BUF bytes, shared for a shorter one (see
    :class:`ipcwire.fifo._write_stream.FifoWriteStream`: a short message written without it
    could land inside another writer's long one).

    So a message is never left in the transport's buffer, to be written later without the
    lock: it is written straight to the FIFO, waiting for room, as the blocking send does,
    and a send that times out says what is true, with the blocking API's words: nothing was
    sent (the message never arrives: send it again), or the message was cut after so many
    bytes (the channel refuses to send again). It used to say "stayed unsent" while the
    transport delivered the message later, and a caller who sent it again got it twice.

    With ``hold_lock=True`` (on Linux; not the default, see below) the shared lock of short
    messages is kept for the rest of the event loop's turn: the first short send of a turn
    takes it, the next ones find it taken, and a
    callback the loop runs once the task has yielded lets it go, so a burst costs one
    ``write`` per message instead of three system calls (flock, write, unlock: the two
    flocks cost about 1 µs on this project's VM, and a burst of 64-byte sends went from
    0.33x to 0.75-0.87x a raw asyncio FIFO loop's rate). Another writer's long message
    waits at most until this task yields, or until this channel looks for its notice
    (:mod:`ipcwire.fifo._notice`, every :data:`LOOK_EVERY` messages) and finds it: from
    then on, while the notice stands, the lock is taken per message again. The lock is let
    go before anything else of this channel takes it (its long message, a send that waits),
    before its write end is closed, and at once when the send does not run in the channel's
    loop. Not the default: a task that blocks its loop after a send (``subprocess.run()``
    of a child that writes a long message to the same FIFO, a blocking channel's long send in
    the same thread) would keep the lock while it waits for that writer, which waits for the
    lock: a hang, or a Timeout where it had worked.
    """

    def __init__(self, *args: Any, lock: bool = False, hold: bool = False, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._lock_writes = lock
        # The shared flock kept for the turn (see the class): held, the loop will run
        # _end_turn, messages before the next look for a notice, a notice seen at the last.
        self._held = False
        self._release_due = False
        self._until_look = 0
        self._standing_back = False
        self._hold_turns = lock and hold and notice.AVAILABLE

    def attach(self, transport: FdTransport) -> None:
        super().attach(transport)
        transport.on_close_write = self._write_end_closing

    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        t = self._fdt
        if not self._lock_writes or t is None:
            await super().send(obj, timeout=timeout)
            return
        data = self._pack(obj)
        if not self._write_at_once(t, data, 1, timeout):
            await self._locked_write(data, 1, timeout)

    async def send_many(self, objs: Iterable[Any], *, timeout: float | None = None) -> None:
        t = self._fdt
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
        its way. False, with nothing written and the flock let go, when something does:
        then :meth:`_locked_write` sends it, waiting and telling errors as always. In its
        way: another send of this channel under way (a long message holds the flock
        exclusively through the same open file, and sends go in their order), what the
        transport still holds, the channel closed or ended, the pipe full, the flock held by
        another writer's long message, a write error, a timeout that is not a plain number
        (the slow path says what is wrong with it)."""
        fd = t._wfd  # (None once the write side is closed, also after a write error)
        if (
            self._waiting
            or type(data) is tuple
            or len(data) > PIPE_BUF
            or self._closed
            or self._end is not None
            or self._cut is not None
            or fd is None
            or t._closing
            or t._wbuf
            or (timeout is not None and type(timeout) is not float and type(timeout) is not int)
        ):
            if self._held:
                self._let_go()
            return False
        if not self._held:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:  # a long message is being written (or an error the slow path tells)
                return False
            self._held = True
        try:
            n = os.write(fd, data)
        except OSError:  # full (EAGAIN), or the reader left: the slow path waits or says so
            self._let_go()
            return False
        size = len(data)
        if n != size:  # POSIX: a pipe writes up to PIPE_BUF bytes whole or not at all
            self._let_go()
            self._bytes_sent += n
            raise ChannelBroken(self._cut_short(n), endpoint=self.url)
        self._bytes_sent += size
        self._sent += count
        self._until_look -= 1
        if self._until_look <= 0:
            self._look(fd)
        elif self._standing_back:
            self._let_go()
        elif not self._release_due:
            self._keep_for_turn()
        return True

    def _look(self, fd: int) -> None:
        """After a short send whose count of messages ran out: look for a long writer's
        notice (then lock per message while it stands), or, without holds, let go."""
        if not self._hold_turns:
            self._let_go()  # (the count stays out: every message comes here)
            return
        seen = notice.posted(fd)
        if seen is None:  # no notice can be seen here: no holds either (as before them)
            self._hold_turns = False
            self._let_go()
            return
        self._until_look = LOOK_EVERY
        self._standing_back = seen
        if seen:
            self._let_go()
        elif not self._release_due:
            self._keep_for_turn()

    def _keep_for_turn(self) -> None:
        # (the channel's loop running in this thread: call_soon from another thread would
        # neither be safe nor wake that loop)
        if _running_loop() is self._loop:
            self._release_due = True
            self._loop.call_soon(self._end_turn)
        else:  # no turn to end: the loop does not run (another loop's, or none)
            self._let_go()

    def _end_turn(self) -> None:
        self._release_due = False
        if self._held:
            self._let_go()

    def _let_go(self) -> None:
        """Unlock the flock this channel holds for the turn (the transport's write end is
        open while it holds: see :meth:`_write_end_closing`)."""
        if self._held:
            self._held = False
            t = self._fdt
            fd = None if t is None else t._wfd
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                except OSError:
                    pass

    def _write_end_closing(self, fd: int) -> None:
        """The transport is about to close (or hand over) its write end ``fd``: a lock held
        through it is let go now. Closing alone would not release it while a copy of the fd
        lives on (a forked child's), and a number reused after the close must never be
        unlocked. So is the lock of a send that waits for room (its own unlock would come
        after the close)."""
        if self._held or self._locked:
            self._held = self._locked = False
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError:
                pass

    def close(self) -> None:
        if self._hand_close_to_loop():  # (another thread: the loop closes it, and lets go)
            return
        self._let_go()  # (before the transport's close: a goodbye is written without it)
        super().close()

    def _after_fork(self) -> None:
        """In a child this process forked: the copy shares the parent's open file, so its
        flock too; the lock the parent holds is the parent's to let go, and the copy locks
        per message."""
        super()._after_fork()
        self._held = False
        self._release_due = False
        self._hold_turns = False
        self._until_look = 0


async def connect(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    timeout: float | None = None,
    writers: str = "many",
    hold_lock: bool = False,
    **kw: Any,
) -> AioPipeChannel:
    """As :func:`ipcwire.fifo.blocking.connect` (waiting for a reader without blocking the
    loop).

    Raises:
        ConnectionRefused, PermissionDenied, ConfigurationError, AuthenticationFailed,
        HandshakeError, Timeout.
    """
    reject_unknown(kw, endpoint, ("timeout", "writers", "hold_lock"))
    if writers not in WRITERS:
        raise ConfigurationError(f"writers={writers!r}: use 'many' or 'one'")
    if type(hold_lock) is not bool:
        raise ConfigurationError(
            f"hold_lock={hold_lock!r} for {endpoint.url}: give True or False", endpoint=endpoint.url
        )
    if hold_lock and writers == "one":
        raise ConfigurationError(
            f"hold_lock=True for {endpoint.url}: with writers='one' there is no lock to hold "
            f"(leave hold_lock out)",
            endpoint=endpoint.url,
        )
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
    if writers == "one":  # no locks: the plain pipe channel (its send buffers, see the docs)
        return await open_aio_channel(
            rfd, wfd, options, role="client", handshake=True, read_to_eagain=True
        )
    return await open_aio_channel(
        rfd,
        wfd,
        options,
        role="client",
        handshake=True,
        read_to_eagain=True,
        channel_factory=AioFifoChannel,
        lock=True,
        hold=hold_lock,
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

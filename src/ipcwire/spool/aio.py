"""The file spool, asyncio driver.

Waiting is native: the inotify descriptor goes into the event loop (``add_reader``), or the
loop polls when inotify is unavailable. Claims (open, flock, rename, read) run on the loop: they
are metadata operations of a few microseconds. Sends with ``fsync=True`` run the write and the
fsyncs in the loop's default executor, because a disk flush can take milliseconds and there is
no non-blocking fsync; with ``fsync=False`` they run on the loop too.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Iterable
from typing import Any, Final

from ipcwire._core.url import Endpoint
from ipcwire._core.wire import WireFormat
from ipcwire._deadline import not_seconds
from ipcwire.aio._timeouts import within
from ipcwire.aio._without_loop import handed_to_loop
from ipcwire.aio.channel import AioChannel, AioListener
from ipcwire.errors import LocalProtocolError, Timeout
from ipcwire.options import ChannelOptions
from ipcwire.spool._channel import ChannelCore, Delivery, ListenerCore
from ipcwire.spool._consume import Claim
from ipcwire.spool._options import SpoolConfig, connect_options, listen_options, refuse_token
from ipcwire.spool._store import SpoolStore

__all__ = ["AioSpoolChannel", "AioSpoolListener", "connect", "listen"]

# How long a send with fsync=False waits for .order on the event loop before going on
# waiting in the executor (a consumer's listing holds it for about as long at most).
ORDER_WAIT: Final = 0.025


class AioSpoolChannel(ChannelCore, AioChannel):
    """A channel onto a spool directory, for asyncio (see the blocking ``SpoolChannel``)."""

    def __init__(self, store: SpoolStore, wire: WireFormat, url: str, cfg: SpoolConfig) -> None:
        loop = asyncio.get_running_loop()  # first: outside a loop, no watcher is opened
        super().__init__(store, wire, url, cfg)
        self._loop = loop
        self._event = asyncio.Event()
        self._reading_fd: int | None = None  # the watcher's fd while it is in the event loop
        self._receiving = False

    # -- sending ----------------------------------------------------------------------------
    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        """Add a message; it is on disk when this returns. ``timeout`` bounds the wait for
        the spool's .order lock (see the blocking ``SpoolChannel.send``)."""
        await self.send_many((obj,), timeout=timeout)

    async def send_many(self, objs: Iterable[Any], *, timeout: float | None = None) -> None:
        items = self._pack_all(objs)
        if not items:
            return
        if not self._store.fsync:
            # On the loop, as a consumer's listing is: .order is waited for briefly here,
            # then (held by a stopped consumer, say) in the executor, within the timeout.
            short = timeout is not None and timeout < ORDER_WAIT
            start = time.monotonic()
            try:
                self._store.put_many(items, timeout if short else ORDER_WAIT)
            except Timeout:
                if short:
                    raise
            else:
                self._count_sent(items)
                return
            put = functools.partial(self._store.put_many, items, timeout, start)
        else:
            put = functools.partial(self._store.put_many, items, timeout)
        await self._loop.run_in_executor(None, put)
        self._count_sent(items)

    # -- receiving --------------------------------------------------------------------------
    async def recv(self, *, timeout: float | None = None) -> Any:
        """Claim the next message; the previous one from ``recv`` is acknowledged now."""
        self._ack_unacked()
        claim = await self._wait_claim(timeout)
        msg = self._open(claim)
        self._unacked.append(claim)
        return msg

    async def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        self._ack_unacked()
        return self._batch(await self._wait_claim(timeout), max_messages)

    async def claim(self, *, timeout: float | None = None) -> Delivery:
        """Claim the next message for explicit ``ack()``/``release()``."""
        return self._deliver(await self._wait_claim(timeout))

    async def _wait_claim(self, timeout: float | None) -> Claim:
        loop = self._loop
        try:
            deadline = None if timeout is None else loop.time() + timeout
        except TypeError:  # ("1", a list: checked only here, off the common path)
            raise not_seconds(timeout, self.url) from None
        if self._receiving:
            raise LocalProtocolError(
                f"another task is already receiving on {self.url}; open one channel per task"
            )
        self._receiving = True
        try:
            while True:
                self._prepare_claim(loop.time())
                self._event.clear()
                self._watcher.drain()
                claim = self._store.try_claim(self._max_frame)
                if claim is not None:
                    return claim
                wait = self._wait_time(loop.time(), deadline, timeout)
                fd = self._watcher.fileno()
                if fd is None:
                    wait = min(wait, self._cfg.poll_interval)
                else:
                    # only while waiting: the descriptor stays readable until drained, and
                    # a reader left registered would spin the loop while nobody receives
                    loop.add_reader(fd, self._event.set)
                    self._reading_fd = fd
                try:
                    async with within(wait):
                        await self._event.wait()
                except TimeoutError:
                    pass
                finally:
                    self._stop_reading()
        finally:
            self._receiving = False

    # -- the rest ---------------------------------------------------------------------------
    def _close(self, *, ack: bool) -> None:
        if self._closed:
            return
        self._closed = True
        # From another thread: the event, the reader and the deliveries' bookkeeping are the
        # loop's. Before, the event was set from here, which does not wake the loop: a
        # waiting recv saw ChannelClosed only at its next timeout or reap.
        if not handed_to_loop(self._loop, lambda: self._close_here(ack)):
            self._close_here(ack)

    def _close_here(self, ack: bool) -> None:
        """The rest of :meth:`_close`, in the channel's loop (or where no loop runs)."""
        try:
            self._settle(ack=ack)
        finally:
            self._stop_reading()  # before the fd closes: never leave a closed fd in the loop
            self._close_files()
            self._event.set()  # a waiting recv wakes and sees ChannelClosed

    def _stop_reading(self) -> None:
        """Take the watcher's fd out of the event loop if it is in it. close() does this before
        it closes the fd: a closed fd left registered makes uvloop abort the process, and on
        asyncio's loop a later remove_reader could hit whatever reused the fd number."""
        if self._reading_fd is not None:
            self._loop.remove_reader(self._reading_fd)
            self._reading_fd = None

    async def aclose(self) -> None:
        self.close()

    async def __aexit__(self, et: Any, e: Any, tb: Any) -> None:
        self._close(ack=et is None)


async def connect(endpoint: Endpoint, options: ChannelOptions, **kw: Any) -> AioSpoolChannel:
    """Open the spool at ``spool:///dir``; options as for the blocking ``connect``."""
    refuse_token(options)
    cfg = connect_options(endpoint, kw)
    return AioSpoolChannel(cfg.store(endpoint.url), options.wire(), endpoint.url, cfg)


class AioSpoolListener(ListenerCore, AioListener):
    """The consumer side of a spool: ``accept()`` returns its one channel, then waits for
    close (see the blocking ``SpoolListener``)."""

    def __init__(self, endpoint: Endpoint, options: ChannelOptions, cfg: SpoolConfig) -> None:
        super().__init__(endpoint, options, cfg)
        self._done = asyncio.Event()

    async def accept(self, *, timeout: float | None = None) -> AioChannel:
        store = self._take_store()
        if store is not None:
            return AioSpoolChannel(store, self._options.wire(), self.url, self._cfg)
        try:
            async with within(timeout):
                await self._done.wait()
        except TimeoutError:
            raise self._no_other_channel() from None
        raise self._closed_error()

    def close(self) -> None:
        if self._close_store():
            self._done.set()


async def listen(endpoint: Endpoint, options: ChannelOptions, **kw: Any) -> AioSpoolListener:
    """Create (if needed) the spool and return its consumer listener."""
    refuse_token(options)
    cfg = listen_options(endpoint, kw)
    return AioSpoolListener(endpoint, options, cfg)

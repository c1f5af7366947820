"""The file spool, asyncio driver.

Waiting is native: the inotify descriptor goes into the event loop (``add_reader``), or the
loop polls when inotify is unavailable. Claims (open, flock, rename, read) run on the loop: they
are metadata operations of a few microseconds. Sends with ``fsync=True`` run the write and the
fsyncs in the loop's default executor, because a disk flush can take milliseconds and there is
no non-blocking fsync; with ``fsync=False`` they run on the loop too.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from typing import Any

from ipcwire._core.url import Endpoint
from ipcwire._core.wire import WireFormat
from ipcwire.aio.channel import AioChannel, AioListener
from ipcwire.channel import ChannelStatistics, PeerInfo
from ipcwire.errors import ChannelClosed, FrameTooLarge, IpcwireError, Timeout
from ipcwire.options import ChannelOptions
from ipcwire.spool._options import SpoolConfig, connect_options, listen_options
from ipcwire.spool._store import Claim, SpoolStore
from ipcwire.spool.blocking import BATCH, Delivery

__all__ = ["AioSpoolChannel", "AioSpoolListener", "connect", "listen"]


class AioSpoolChannel(AioChannel):
    """A channel onto a spool directory, for asyncio (see the blocking ``SpoolChannel``)."""

    def __init__(self, store: SpoolStore, wire: WireFormat, url: str, cfg: SpoolConfig) -> None:
        self.url = url
        self._loop = asyncio.get_running_loop()
        self._store = store
        self._wire = wire
        self._encode = wire.codec.encode
        self._decode = wire.decode
        self._max_frame = wire.max_frame
        self._cfg = cfg
        self._watcher = cfg.watcher(store.new)
        self._event = asyncio.Event()
        self._reading_fd: int | None = None  # the watcher's fd while it is in the event loop
        self._unacked: list[Claim] = []
        self._claims: set[Claim] = set()
        self._receiving = False
        self._next_reap = 0.0
        self._closed = False
        self._sent = self._received = self._bytes_sent = self._bytes_received = 0

    @property
    def wakeups(self) -> str:
        """How waiting works here: ``"inotify"``, or ``"polling"`` (and why)."""
        w = self._watcher
        return w.mode if w.mode == "inotify" else f"polling every {w.poll_interval} s ({w.reason})"

    @property
    def store(self) -> SpoolStore:
        """The directory underneath."""
        return self._store

    # -- sending ----------------------------------------------------------------------------
    def _pack(self, obj: Any) -> Any:
        data = self._encode(obj)
        size = len(data) if type(data) is bytes else memoryview(data).nbytes
        if size > self._max_frame:
            raise FrameTooLarge(
                f"message of {size} bytes not sent to {self.url}: over max_frame="
                f"{self._max_frame}; raise max_frame= on both sides",
                size=size,
                limit=self._max_frame,
                endpoint=self.url,
            )
        return data

    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        """Add a message; it is on disk when this returns (``timeout`` is not used)."""
        await self.send_many((obj,))

    async def send_many(self, objs: Iterable[Any], *, timeout: float | None = None) -> None:
        items = [self._pack(o) for o in objs]
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        if not items:
            return
        if self._store.fsync:
            await self._loop.run_in_executor(None, self._store.put_many, items)
        else:
            self._store.put_many(items)
        self._sent += len(items)
        self._bytes_sent += sum(memoryview(d).nbytes for d in items)

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
        limit = min(max_messages or BATCH, BATCH)
        self._ack_unacked()
        first = await self._wait_claim(timeout)
        out = [self._open(first)]
        self._unacked.append(first)
        while len(out) < limit:
            try:
                claim = self._store.try_claim(self._max_frame)
            except FrameTooLarge:
                break
            if claim is None:
                break
            try:
                out.append(self._open(claim))
            except IpcwireError:
                break
            self._unacked.append(claim)
        return out

    async def claim(self, *, timeout: float | None = None) -> Delivery:
        """Claim the next message for explicit ``ack()``/``release()``."""
        claim = await self._wait_claim(timeout)
        msg = self._open(claim)
        self._claims.add(claim)
        return Delivery(claim, msg)

    def _open(self, claim: Claim) -> Any:
        try:
            msg = self._decode(memoryview(claim.data))
        except IpcwireError:
            claim.done = True
            self._store._bury(claim.name, f"it does not decode as {self._wire.codec.name}")
            os.close(claim.fd)
            raise
        self._received += 1
        self._bytes_received += len(claim.data)
        return msg

    def _ack_unacked(self) -> None:
        for claim in self._unacked:
            claim.ack()
        self._unacked.clear()

    async def _wait_claim(self, timeout: float | None) -> Claim:
        loop = self._loop
        deadline = None if timeout is None else loop.time() + timeout
        if self._receiving:
            from ipcwire.errors import LocalProtocolError

            raise LocalProtocolError(
                f"another task is already receiving on {self.url}; open one channel per task"
            )
        self._receiving = True
        try:
            while True:
                if self._closed:
                    raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
                now = loop.time()
                if now >= self._next_reap:
                    self._store.reap()
                    self._next_reap = now + self._cfg.reap_interval
                self._event.clear()
                self._watcher.drain()
                claim = self._store.try_claim(self._max_frame)
                if claim is not None:
                    return claim
                now = loop.time()
                if deadline is not None and now >= deadline:
                    raise Timeout(f"no message in {self.url} within {timeout} s", endpoint=self.url)
                wait = self._next_reap - now
                if deadline is not None:
                    wait = min(wait, deadline - now)
                fd = self._watcher.fileno()
                if fd is None:
                    wait = min(wait, self._cfg.poll_interval)
                else:
                    # only while waiting: the descriptor stays readable until drained, and
                    # a reader left registered would spin the loop while nobody receives
                    loop.add_reader(fd, self._event.set)
                    self._reading_fd = fd
                try:
                    async with asyncio.timeout(max(wait, 0.0)):
                        await self._event.wait()
                except TimeoutError:
                    pass
                finally:
                    self._stop_reading()
        finally:
            self._receiving = False

    # -- the rest ---------------------------------------------------------------------------
    def close(self) -> None:
        """Acknowledge what ``recv`` returned, release unfinished ``claim()`` deliveries."""
        self._close(ack=True)

    def _close(self, *, ack: bool) -> None:
        if self._closed:
            return
        self._closed = True
        for claim in self._unacked:
            if ack:
                claim.ack()
            else:
                claim.release()
        self._unacked.clear()
        for claim in self._claims:
            claim.release()
        self._claims.clear()
        self._stop_reading()  # before the fd closes: never leave a closed fd in the loop
        self._watcher.close()
        self._store.close()
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

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def peer(self) -> PeerInfo | None:
        return PeerInfo(address=self._store.path)

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            messages_sent=self._sent,
            messages_received=self._received,
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
        )


async def connect(endpoint: Endpoint, options: ChannelOptions, **kw: Any) -> AioSpoolChannel:
    """Open the spool at ``spool:///dir``; options as for the blocking ``connect``."""
    cfg = connect_options(endpoint, kw)
    return AioSpoolChannel(cfg.store(endpoint.url), options.wire(), endpoint.url, cfg)


class AioSpoolListener(AioListener):
    """The consumer side of a spool: ``accept()`` returns its one channel, then waits for
    close (see the blocking ``SpoolListener``)."""

    def __init__(self, endpoint: Endpoint, options: ChannelOptions, cfg: SpoolConfig) -> None:
        self.url = endpoint.url
        self._options = options
        self._cfg = cfg
        self._store: SpoolStore | None = cfg.store(endpoint.url)
        self._closed = False
        self._done = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self._closed

    async def accept(self, *, timeout: float | None = None) -> AioChannel:
        if self._closed:
            raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
        store, self._store = self._store, None
        if store is not None:
            return AioSpoolChannel(store, self._options.wire(), self.url, self._cfg)
        try:
            async with asyncio.timeout(timeout):
                await self._done.wait()
        except TimeoutError:
            raise Timeout(
                f"{self.url}: a spool has one channel, already accepted; no other comes",
                endpoint=self.url,
            ) from None
        raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._store is not None:
            self._store.close()
            self._store = None
        self._done.set()


async def listen(endpoint: Endpoint, options: ChannelOptions, **kw: Any) -> AioSpoolListener:
    """Create (if needed) the spool and return its consumer listener."""
    cfg = listen_options(endpoint, kw)
    return AioSpoolListener(endpoint, options, cfg)

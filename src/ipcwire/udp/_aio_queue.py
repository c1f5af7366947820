"""The asyncio udp driver's queue of received messages, one per channel.

Datagrams arrive whether or not anyone is receiving (the event loop reads them), so each
channel queues at most :data:`QUEUE` messages; more are dropped and counted (UDP has no way to
slow the sender down). One task at a time waits on it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from ipcwire.aio._timeouts import within
from ipcwire.errors import IpcwireError, LocalProtocolError, Timeout
from ipcwire.udp._channel import Address, address_url, closed_error
from ipcwire.udp._socket import DatagramFormat

__all__ = ["QUEUE", "MessageQueue"]

QUEUE: Final = 4096


class MessageQueue:
    """Messages (or queued errors) waiting for ``recv``; bounded, with a drop count."""

    def __init__(self, url: str) -> None:
        self.url = url
        # the channel this is the queue of, weakly (its ChannelClosed says why it closed)
        self.channel: Callable[[], object | None] = lambda: None
        self.items: deque[tuple[Any, Address] | IpcwireError] = deque()
        # each item's share of its datagram's bytes (the last message of a datagram carries
        # them all), and their sum: statistics().buffered_bytes
        self.sizes: deque[int] = deque()
        self.nbytes = 0
        self.waiter: asyncio.Future[None] | None = None
        self.dropped = 0
        self.closed = False

    def put(self, item: tuple[Any, Address] | IpcwireError, nbytes: int = 0) -> None:
        if len(self.items) >= QUEUE:  # errors too: garbage from a peer must not grow it
            self.dropped += 1
            return
        self.items.append(item)
        self.sizes.append(nbytes)
        self.nbytes += nbytes
        self.wake()

    def put_datagram(self, fmt: DatagramFormat, data: bytes, addr: Address) -> None:
        """Queue the messages of one datagram, or the error ``recv`` raises in their place."""
        if len(data) > fmt.recv_limit:
            self.put(fmt.too_large(len(data), address_url(addr)))
            return
        if not fmt.ndjson:  # one datagram, one message
            try:
                msg = fmt.decode(memoryview(data))
            except Exception as exc:
                self.put(fmt.bad(exc), len(data))
                return
            self.put((msg, addr), len(data))
            return
        try:
            msgs = fmt.unpack(memoryview(data))
        except IpcwireError as exc:
            self.put(exc, len(data))
            return
        last = len(msgs) - 1
        for i, msg in enumerate(msgs):  # an NDJSON line's error in its place
            item = msg if isinstance(msg, IpcwireError) else (msg, addr)
            self.put(item, len(data) if i == last else 0)

    def discard(self) -> int:
        """Drop what is queued (messages and errors); how many items."""
        n = len(self.items)
        self.items.clear()
        self.sizes.clear()
        self.nbytes = 0
        return n

    def wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def close(self) -> None:
        """``get`` raises ChannelClosed from now on (a waiting one too)."""
        self.closed = True
        self.wake()

    def take(self) -> tuple[Any, Address]:
        """The next item (one is queued, or the queue is closed); a queued error is raised."""
        if self.closed:
            raise closed_error(self.url, self.channel())
        item = self.items.popleft()
        self.nbytes -= self.sizes.popleft()
        if isinstance(item, IpcwireError):
            raise item
        return item

    async def wait(self, timeout: float | None) -> bool:
        """Until something is queued or :meth:`wake` is called (True), or ``timeout`` passed
        (False).

        Raises:
            LocalProtocolError: another task is waiting already.
        """
        if self.waiter is not None:
            raise LocalProtocolError(f"another task is already receiving on {self.url}")
        fut = self.waiter = asyncio.get_running_loop().create_future()
        try:
            if timeout is None:  # (no asyncio.timeout: on Python 3.11 it costs two more
                await fut  # get_running_loop() calls, each a getpid() system call)
            else:
                async with within(timeout):
                    await fut
        except TimeoutError:
            return False
        finally:
            self.waiter = None
        return True

    def timed_out(self, timeout: float | None) -> Timeout:
        """The error of a receive that got nothing within ``timeout``."""
        if timeout == 0:
            return Timeout(f"no message from {self.url} yet", endpoint=self.url)
        return Timeout(f"no message from {self.url} within {timeout} s", endpoint=self.url)

    async def get(self, timeout: float | None) -> tuple[Any, Address]:
        while not (self.items or self.closed):
            if timeout == 0 or not await self.wait(timeout):
                raise self.timed_out(timeout)
        return self.take()

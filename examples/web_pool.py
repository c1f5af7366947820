"""A pool of asyncio channels for a web service (FastAPI, Starlette, aiohttp...).

Tasks calling request() on one shared channel take turns (a reply carries no id, so only
one request may be out at a time): one slow request holds every request queued behind it,
and a request the web layer cancels (client gone, asyncio.wait_for, a timeout) closes the
channel for all of them, on purpose (its late reply would answer the next request). So a
service gives each request a channel of its own, from a pool: at most SIZE channels, a
request waits (boundedly) for a free one, a channel that was closed, broke or whose worker
went away is replaced, and none is ever leaked. docs/web-services.md explains it.

This file runs the pool against a worker that echoes after a delay (serve() here, as a
worker process would), with concurrent requests, some of them cancelled, and checks that
every reply answers its own request and that no descriptor is left open.

Run: python examples/web_pool.py
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import ipcwire
from ipcwire import aio


class ChannelPool:
    """At most ``size`` channels to ``url``, each used by one request at a time."""

    def __init__(self, url: str, *, size: int = 8, wait: float = 5.0, reconnect: float = 5.0,
                 **options: Any) -> None:  # fmt: skip
        self.url, self.wait, self.reconnect, self.options = url, wait, reconnect, options
        self._slots = asyncio.Semaphore(size)  # one per channel lent or not yet opened
        self._idle: list[aio.AioChannel] = []  # open, lent to nobody
        self._open: set[aio.AioChannel] = set()  # every channel this pool opened and holds
        self._closed = False
        self.connects = 0

    @contextlib.asynccontextmanager
    async def channel(self) -> AsyncIterator[aio.AioChannel]:
        """``async with pool.channel() as ch:`` one channel, for this block only. A block
        that raises (a Timeout, a cancellation, a broken channel) gives its channel up."""
        try:
            async with asyncio.timeout(self.wait):
                await self._slots.acquire()
        except TimeoutError:
            raise ipcwire.Timeout(
                f"no free channel to {self.url} within {self.wait} s: every one is in use; "
                "raise size= or wait=",
                endpoint=self.url,
            ) from None
        ch = None
        try:
            ch = await self._take()
            yield ch
        except BaseException:
            if ch is not None:
                self._drop(ch)  # its state is unknown: a late reply may still come
            raise
        else:
            if self._closed or ch.closed:
                self._drop(ch)
            else:
                self._idle.append(ch)
        finally:
            self._slots.release()

    async def _take(self) -> aio.AioChannel:
        while self._idle:
            ch = self._idle.pop()
            try:
                await ch.recv(timeout=0)  # nothing should be there...
            except ipcwire.Timeout:
                return ch  # ...and nothing is: still good
            except ipcwire.IpcwireError:
                pass  # the worker went away (EndOfChannel, ChannelBroken) or it was closed
            self._drop(ch)  # (or a stray message came: not a channel to trust)
        if self._closed:
            raise ipcwire.ChannelClosed(f"the pool for {self.url} is closed", endpoint=self.url)
        ch = await aio.connect(self.url, reconnect=self.reconnect, **self.options)
        self._open.add(ch)  # (no await between: a cancellation cannot lose it)
        self.connects += 1
        if self._closed:  # closed while we connected
            self._drop(ch)
            raise ipcwire.ChannelClosed(f"the pool for {self.url} is closed", endpoint=self.url)
        return ch

    def _drop(self, ch: aio.AioChannel) -> None:
        self._open.discard(ch)
        ch.close()  # (close(), not aclose(): safe in a cancelled task; it needs no await)

    async def request(self, msg: Any, *, timeout: float = 30) -> Any:
        """``request()`` on a channel of the pool."""
        async with self.channel() as ch:
            return await ch.request(msg, timeout=timeout)

    async def aclose(self) -> None:
        """Close every channel; requests still out raise ChannelClosed."""
        self._closed = True
        self._idle.clear()
        channels, self._open = list(self._open), set()
        await asyncio.gather(*(ch.aclose() for ch in channels))


# The demonstration: a worker, then the web requests.


async def worker(ch: aio.AioChannel) -> None:
    """One client of the worker: echo each request's id after its delay."""
    try:
        async for msg in ch:
            await asyncio.sleep(msg["delay"])
            await ch.send({"id": msg["id"]})
    except ipcwire.ChannelBroken:
        # A client whose request was cut closes its channel with the reply unread, which
        # the kernel reports as a reset: expected here (uncaught, serve() logs a WARNING).
        pass


async def shared_channel(url: str) -> None:
    """What one channel shared by every request does (why the pool exists)."""
    async with await aio.connect(url, codec="json") as ch:
        start = time.perf_counter()
        slow = asyncio.ensure_future(ch.request({"id": "slow", "delay": 0.3}))
        await asyncio.sleep(0.01)  # (the slow request goes out first)
        await asyncio.gather(*(ch.request({"id": i, "delay": 0}) for i in range(10)))
        held = time.perf_counter() - start
        await slow
        cut = asyncio.ensure_future(asyncio.wait_for(ch.request({"id": "c", "delay": 1}), 0.1))
        await asyncio.sleep(0.01)
        queued = await asyncio.gather(*(ch.request({"id": i, "delay": 0}) for i in range(3)),
                                      cut, return_exceptions=True)  # fmt: skip
    print(f"shared channel: 10 fast requests behind a 0.3 s one took {held:.2f} s; "
          f"one cut by wait_for -> {[type(r).__name__ for r in queued]}")  # fmt: skip


async def web_requests(pool: ChannelPool, n: int) -> Counter[str]:
    """n requests from 50 concurrent tasks, a quarter of them cut short as a web layer does."""
    seen: Counter[str] = Counter()
    ids = iter(range(n))

    async def one_task() -> None:
        for i in ids:
            try:
                if i % 4 == 0:  # the client goes away before the reply (or before its turn)
                    await asyncio.wait_for(pool.request({"id": i, "delay": 0.03}), 0.02)
                    seen["WRONG: not cut"] += 1
                    continue
                reply = await pool.request({"id": i, "delay": random.uniform(0, 0.01)})
                seen["ok" if reply["id"] == i else "WRONG REPLY"] += 1
            except TimeoutError:
                seen["cut"] += 1

    await asyncio.gather(*(one_task() for _ in range(50)))
    return seen


def open_sockets() -> int:
    """How many sockets this process holds (Linux; 0 elsewhere)."""
    if not os.path.isdir("/proc/self/fd"):
        return 0
    links = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # (the listing's own descriptor is gone)
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
    return sum(link.startswith("socket:") for link in links)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"unix://{tmp}/worker.sock"
        sockets = open_sockets()
        server = await aio.listen(url, codec="json")
        serving = asyncio.ensure_future(server.serve(worker))
        await shared_channel(url)

        pool = ChannelPool(url, size=16, codec="json")
        start = time.perf_counter()
        slow = asyncio.ensure_future(pool.request({"id": "slow", "delay": 0.3}))
        await asyncio.gather(*(pool.request({"id": i, "delay": 0}) for i in range(10)))
        print(f"pool: the same 10 fast requests took {time.perf_counter() - start:.2f} s")
        await slow

        seen = await web_requests(pool, 600)
        print(f"pool: 600 requests from 50 tasks: {dict(seen)}; {pool.connects} connects")
        assert seen == {"ok": 450, "cut": 150}, seen

        await server.aclose()  # the worker restarts: idle channels see it gone, are replaced
        await serving
        server = await aio.listen(url, codec="json")
        serving = asyncio.ensure_future(server.serve(worker))
        reply = await pool.request({"id": "after restart", "delay": 0})
        print(f"pool after the worker restarted: {reply}; {pool.connects} connects")

        await pool.aclose()
        await server.aclose()
        await serving
        await asyncio.sleep(0.05)  # (closed transports let go of their sockets)
        print(f"sockets open: {open_sockets()} now, {sockets} before")
        assert open_sockets() == sockets


if __name__ == "__main__":
    asyncio.run(main())

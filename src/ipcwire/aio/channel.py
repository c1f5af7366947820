"""The asyncio channel API: the blocking API's names, with ``await``.

Native asyncio (protocols and loop APIs), never the blocking API in a thread.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, Self

from ipcwire.channel import ChannelStatistics, PeerInfo
from ipcwire.errors import ChannelClosed, EndOfChannel, IpcwireError, Timeout
from ipcwire.options import DEFAULT_REQUEST_TIMEOUT

__all__ = ["AioChannel", "AioListener"]

log = logging.getLogger("ipcwire")


class AioChannel(abc.ABC):
    """A connected message channel (asyncio). Errors as in :class:`ipcwire.Channel`."""

    url: str

    @abc.abstractmethod
    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        """Send one message; waits only while the peer is not keeping up (flow control)."""

    @abc.abstractmethod
    async def recv(self, *, timeout: float | None = None) -> Any:
        """Receive one whole message; EndOfChannel when the peer closed cleanly."""

    @abc.abstractmethod
    def close(self) -> None:
        """Start closing now, without waiting (safe from synchronous code)."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close and wait, boundedly, until the connection is gone."""

    @abc.abstractmethod
    def statistics(self) -> ChannelStatistics:
        """Counters of this channel."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """True once closed by this side."""

    @property
    def peer(self) -> PeerInfo | None:
        """Who is at the other end, where the mechanism knows."""
        return None

    async def recv_nowait(self) -> Any:
        """A message already received, without waiting (Timeout when there is none)."""
        return await self.recv(timeout=0)

    async def send_many(self, objs: Iterable[Any], *, timeout: float | None = None) -> None:
        """Send several messages (one write where the mechanism allows)."""
        for obj in objs:
            await self.send(obj, timeout=timeout)

    async def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        """Wait for one message, then take every message already received."""
        out = [await self.recv(timeout=timeout)]
        while max_messages is None or len(out) < max_messages:
            try:
                out.append(await self.recv(timeout=0))
            except (Timeout, EndOfChannel):
                break
        return out

    async def request(self, obj: Any, *, timeout: float | None = DEFAULT_REQUEST_TIMEOUT) -> Any:
        """Send and return the next message; on Timeout the channel is closed (see the
        blocking :meth:`ipcwire.Channel.request`)."""
        await self.send(obj, timeout=timeout)
        try:
            return await self.recv(timeout=timeout)
        except Timeout as exc:
            await self.aclose()
            raise Timeout(
                f"no reply from {self.url} within {timeout} s; the channel was closed so that "
                f"a late reply cannot answer a later request. Raise timeout= if the peer is slow",
                endpoint=self.url,
            ) from exc

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while True:
            try:
                yield await self.recv()
            except EndOfChannel:
                return

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} {'closed' if self.closed else 'open'}>"


AioHandler = Callable[[AioChannel], Awaitable[object]]


class AioListener(abc.ABC):
    """Accepts channels (asyncio)."""

    url: str

    @abc.abstractmethod
    async def accept(self, *, timeout: float | None = None) -> AioChannel:
        """The next client whose handshake succeeded (failures are logged and dropped)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop listening now and remove what listening created."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """True once closed."""

    async def aclose(self) -> None:
        """Close (listening sockets close at once; this never waits on open channels)."""
        self.close()

    async def serve(self, handler: AioHandler, *, max_channels: int | None = None) -> None:
        """Accept until closed, one task per channel; exceptions in handlers are logged.

        When the listener closes (or this task is cancelled), open channels are closed and
        their handler tasks cancelled, so shutdown never hangs on a client.
        """
        slots = asyncio.Semaphore(max_channels) if max_channels else None
        tasks: dict[asyncio.Task[None], AioChannel] = {}

        async def run(ch: AioChannel) -> None:
            try:
                async with ch:
                    await handler(ch)
            except EndOfChannel:
                pass
            except IpcwireError as exc:
                log.info("ipcwire: handler for %s ended: %s", ch.url, exc)
            except Exception:
                log.exception("ipcwire: handler for %s raised", ch.url)
            finally:
                if slots is not None:
                    slots.release()

        try:
            while True:
                if slots is not None:
                    await slots.acquire()
                try:
                    ch = await self.accept()
                except ChannelClosed:
                    return
                task = asyncio.get_running_loop().create_task(run(ch))
                tasks[task] = ch
                task.add_done_callback(lambda t: tasks.pop(t, None))
        finally:
            for task, ch in list(tasks.items()):
                ch.close()
                task.cancel()
            if tasks:
                await asyncio.wait(list(tasks), timeout=5.0)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} {'closed' if self.closed else 'listening'}>"

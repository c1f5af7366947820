"""The asyncio channel API: the blocking API's names, with ``await``.

Native asyncio (protocols and loop APIs), never the blocking API in a thread.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from ipcwire._deadline import limit
from ipcwire._droplog import DropLog
from ipcwire.aio._timeouts import within
from ipcwire.channel import (
    ChannelStatistics,
    PeerInfo,
    cannot_pickle,
    closed_because,
    interrupted_request,
    log_handler_end,
    timed_out_request,
)
from ipcwire.errors import ChannelClosed, EndOfChannel, IpcwireError, Timeout
from ipcwire.options import DEFAULT_REQUEST_TIMEOUT

__all__ = ["AcceptQueue", "AioChannel", "AioListener"]

log = logging.getLogger("ipcwire")


class AioChannel(abc.ABC):
    """A connected message channel (asyncio). Errors as in :class:`ipcwire.Channel`.

    Concurrency: any number of tasks may send at once (their messages never interleave, even
    when a send waits for room part-way). One task receives at a time: most mechanisms refuse
    a second task's concurrent receive with ``LocalProtocolError``, as websockets does; fan
    messages out from one receiving task (an ``asyncio.Queue``) when several need them.
    """

    url: str
    # What ``closed`` and ``peer`` report, unless a mechanism overrides the property.
    _closed: bool = False
    _peer: PeerInfo | None = None
    # An error the base recv_many met after it had messages: raised by the next receive.
    _recv_many_error: IpcwireError | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """As :class:`ipcwire.Channel`: a mechanism with its own ``recv`` and the base
        ``recv_many`` has its ``recv`` raise an error ``recv_many`` held back."""
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("recv")
        if own is not None and cls.recv_many is AioChannel.recv_many:
            cls.recv = _deferred_first(own)  # type: ignore[method-assign,assignment]

    def _raise_deferred(self) -> None:
        deferred = self._recv_many_error
        if deferred is not None:
            self._recv_many_error = None
            if not self.closed:  # closed wins: the receive then raises ChannelClosed
                raise deferred

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
    def closed(self) -> bool:
        """True once closed by this side."""
        return self._closed

    @property
    def peer(self) -> PeerInfo | None:
        """Who is at the other end, where the mechanism knows."""
        return self._peer

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
        """Wait for one message, then take every message already received; an error met
        after the first ends the batch and is raised by the next receive (as the blocking
        :meth:`ipcwire.Channel.recv_many`)."""
        self._raise_deferred()
        out = [await self.recv(timeout=timeout)]
        while max_messages is None or len(out) < max_messages:
            try:
                out.append(await self.recv(timeout=0))
            except (Timeout, EndOfChannel):
                break
            except ChannelClosed:
                raise
            except IpcwireError as exc:
                self._recv_many_error = exc
                break
        return out

    async def request(self, obj: Any, *, timeout: float | None = DEFAULT_REQUEST_TIMEOUT) -> Any:
        """Send and return the next message; on Timeout the channel is closed. Tasks calling
        it on one channel at once take turns, so each gets its own reply (see the blocking
        :meth:`ipcwire.Channel.request`)."""
        limit(timeout, self.url)  # a timeout that is not one fails before anything is sent
        lock: asyncio.Lock | None = self.__dict__.get("_ipcwire_turns")
        if lock is None:
            lock = self.__dict__.setdefault("_ipcwire_turns", asyncio.Lock())
        if lock.locked():
            loop = asyncio.get_running_loop()
            start = loop.time()
            try:
                async with within(timeout):
                    await lock.acquire()
            except TimeoutError:
                raise Timeout(
                    f"request to {self.url} not sent: other tasks' requests on this channel "
                    f"held it for {timeout} s (they take turns, so that each gets its own "
                    f"reply); raise timeout=, or give each task a channel of its own",
                    endpoint=self.url,
                ) from None
            left = None if timeout is None else max(timeout - (loop.time() - start), 0.0)
        else:
            await lock.acquire()  # (free: at once)
            left = timeout
        try:
            return await self._exchange(obj, timeout=left)
        except BaseException as exc:
            if not isinstance(exc, Exception):  # cancelled (asyncio.wait_for, timeout()...)
                # while its request was out: the reply may still come, and the next request
                # would take it for its own. Closed, as when timeout= runs out.
                closed_because(self, interrupted_request(f"cancelled ({type(exc).__name__})"))
                self.close()
            raise
        finally:
            lock.release()

    async def _exchange(self, obj: Any, *, timeout: float | None) -> Any:
        """:meth:`request` in its turn (what a driver with a better way overrides)."""
        await self.send(obj, timeout=timeout)
        try:
            return await self.recv(timeout=timeout)
        except Timeout as exc:
            # close(), not aclose(): the caller's timeout= bounds the call, and closing may
            # take longer (a spawned child's shutdown ladder: seconds); it goes on by itself.
            closed_because(self, timed_out_request(timeout))
            self.close()
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
        await self._aclose_after(e)

    async def _aclose_after(self, exc: BaseException | None) -> None:
        """Close at the end of an ``async with`` block that ``exc`` ended (None: it
        finished). Drivers that can tell the peer the block failed override it."""
        await self.aclose()

    def __reduce__(self) -> tuple[Any, ...]:
        raise cannot_pickle(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} {'closed' if self.closed else 'open'}>"


AioHandler = Callable[[AioChannel], Awaitable[object]]


def _deferred_first(
    recv: Callable[..., Awaitable[Any]],
) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(recv)
    async def recv_after_deferred(self: AioChannel, *args: Any, **kwargs: Any) -> Any:
        self._raise_deferred()
        return await recv(self, *args, **kwargs)

    return recv_after_deferred


class AioListener(abc.ABC):
    """Accepts channels (asyncio)."""

    url: str
    _closed: bool = False  # what ``closed`` reports, unless a mechanism overrides it

    @abc.abstractmethod
    async def accept(self, *, timeout: float | None = None) -> AioChannel:
        """The next client whose handshake succeeded (failures are logged and dropped)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop listening now and remove what listening created."""

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self._closed

    async def aclose(self) -> None:
        """Close (listening sockets close at once), and wait until a :meth:`serve` running
        in this loop has ended its channels (boundedly: see :meth:`serve`)."""
        self.close()
        await self._served()

    async def _served(self) -> None:
        """Wait until each :meth:`serve` of this listener running in this loop has closed its
        channels and ended its handlers (what a mechanism's own ``aclose()`` awaits too). A
        graceful shutdown awaits ``aclose()`` and then ends the loop: without this, the
        loop's end cancelled the handlers first, and their clients saw a failure (ws: 1011)
        instead of the close that ``serve()`` gives them."""
        serving: set[asyncio.Future[None]] = self.__dict__.get("_serving", set())
        loop = asyncio.get_running_loop()
        mine = [f for f in serving if f.get_loop() is loop and not f.done()]
        if mine:  # (not shielded: a handler that awaits this is cancelled by serve(), and goes)
            await asyncio.wait(mine)

    async def serve(self, handler: AioHandler, *, max_channels: int | None = None) -> None:
        """Accept until closed, one task per channel; exceptions in handlers are logged (as
        by the blocking ``serve()``: :func:`ipcwire.channel.log_handler_end`).

        When the listener closes (or this task is cancelled), open channels are closed and
        their handler tasks cancelled, so shutdown never hangs on a client.
        """
        slots = asyncio.Semaphore(max_channels) if max_channels else None
        tasks: dict[asyncio.Task[None], AioChannel] = {}
        ended = asyncio.get_running_loop().create_future()  # (what aclose() waits for)
        serving: set[asyncio.Future[None]] = self.__dict__.setdefault("_serving", set())
        serving.add(ended)
        ends = DropLog(self.url, "handlers ended by an error")

        async def run(ch: AioChannel) -> None:
            logged: Exception | None = None
            try:
                async with ch:  # (an exception's goodbye tells the client, after the log)
                    try:
                        await handler(ch)
                    except EndOfChannel:
                        pass
                    except Exception as exc:
                        log_handler_end(ch.url, ch.peer, exc, ends)
                        logged = exc
                        raise
            except Exception as exc:
                if exc is not logged:  # (the close failed: after a handler that ended well)
                    log_handler_end(ch.url, ch.peer, exc, ends)
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
                ends.flush()  # (the count of a window that is over, if any)
                task = asyncio.get_running_loop().create_task(run(ch))
                tasks[task] = ch
                task.add_done_callback(lambda t: tasks.pop(t, None))
        finally:
            try:
                for task, ch in list(tasks.items()):
                    ch.close()
                    task.cancel()
                if tasks:
                    await asyncio.wait(list(tasks), timeout=5.0)
            finally:
                ends.flush(final=True)
                serving.discard(ended)
                ended.set_result(None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __reduce__(self) -> tuple[Any, ...]:
        raise cannot_pickle(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} {'closed' if self.closed else 'listening'}>"


C = TypeVar("C", bound=AioChannel)


class AcceptQueue(Generic[C]):
    """The channels of an asyncio listener that connected and wait for ``accept()``.

    ``close()`` closes those nobody accepted and wakes every ``accept()`` with
    ``ChannelClosed``; ``get()`` waits with the listener's timeout and words.
    """

    def __init__(self, nobody: str = "no client connected to") -> None:
        self._nobody = nobody
        self._queue: asyncio.Queue[C | None] = asyncio.Queue()
        self.closed = False

    def put(self, ch: C) -> None:
        self._queue.put_nowait(ch)

    def qsize(self) -> int:
        return self._queue.qsize()

    def discard(self, ch: C) -> bool:
        """Take ``ch`` out of the queue if nobody accepted it yet (its peer left meanwhile:
        a dead channel must neither wait there nor be handed out); whether it was there.
        The others keep their order."""
        queue = self._queue
        kept: list[C | None] = []
        found = False
        while not queue.empty():  # (nobody waits in get() while something is queued)
            item = queue.get_nowait()
            if item is ch and not found:
                found = True
            else:
                kept.append(item)
        for item in kept:
            queue.put_nowait(item)
        return found

    async def get(self, url: str, timeout: float | None) -> C:
        """The next channel for the listener at ``url`` (named in the errors).

        Raises:
            Timeout: none within ``timeout``. ChannelClosed: the listener was closed.
        """
        if self.closed:
            raise ChannelClosed(f"listener {url} is closed", endpoint=url)
        try:
            async with within(timeout):
                ch = await self._queue.get()
        except TimeoutError:
            raise Timeout(f"{self._nobody} {url} within {timeout} s", endpoint=url) from None
        if ch is None:  # closed: pass the wake-up on to the next accept()
            self._queue.put_nowait(None)
            raise ChannelClosed(f"listener {url} is closed", endpoint=url)
        return ch

    def close(self) -> None:
        """Close the channels nobody accepted; wake every ``get()``."""
        if self.closed:
            return
        self.closed = True
        while not self._queue.empty():
            ch = self._queue.get_nowait()
            if ch is not None:
                ch.close()
        self._queue.put_nowait(None)

"""The channels a server application holds: one per HTTP client session (or plain request).

:class:`ServerChannel` is the blocking one: the HTTP server runs on its own event-loop thread
and hands messages over through a condition variable. :class:`AioServerChannel` lives on the
server's loop itself. Both are sinks of a :class:`~ipcwire.http._session.Session`.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import deque
from types import TracebackType
from typing import Any, Final

from ipcwire._core.codecs import Codec, encode_message
from ipcwire._core.ending import error_reason
from ipcwire._deadline import limit, seconds_left
from ipcwire.aio._timeouts import within
from ipcwire.aio._without_loop import handed_to_loop
from ipcwire.aio.channel import AioChannel
from ipcwire.channel import Channel, ChannelStatistics, PeerInfo
from ipcwire.errors import ChannelClosed, EndOfChannel, IpcwireError, Timeout
from ipcwire.http._request import Undecodable
from ipcwire.http._session import HIGH_WATER, LOW_WATER, Session

__all__ = ["AioServerChannel", "ServerChannel"]


class _Counters:
    __slots__ = ("bytes_received", "bytes_sent", "received", "sent")

    def __init__(self) -> None:
        self.sent = self.received = self.bytes_sent = self.bytes_received = 0


class _Wake:
    """Put in a server channel's queue to wake its receivers: the end, or close()."""

    __slots__ = ()


_WAKE: Final = _Wake()


class ServerChannel(Channel):
    """A server-side HTTP channel (blocking API); see docs/mechanisms/rest.md.

    Messages reach ``recv`` through a ``queue.SimpleQueue`` (the loop thread puts, the
    application's thread takes: no Python-level condition variable on the way); the end
    (or ``close``) is a marker put behind the last message.
    """

    def __init__(self, session: Session, codec: Codec, url: str) -> None:
        self.url = url
        self._session = session
        self._codec = codec
        self._loop = session.loop
        self._lock = threading.Lock()  # the byte counts
        self._space = threading.Condition(self._lock)  # senders waiting for the client
        self._space_waiters = 0
        self._q: queue.SimpleQueue[tuple[Any, int] | _Wake] = queue.SimpleQueue()
        self._queued = 0
        self._unsent = 0
        self._end_exc: IpcwireError | None = None
        self._held: tuple[Any, int] | None = None  # taken by recv_many, raised next
        self._closed = False
        self._failure = ""  # a with block left by an exception: the client is told this
        self._n = _Counters()
        session.sink = self

    # -- sink side (the loop thread) ------------------------------------------------------------
    def _deliver(self, items: list[tuple[Any, int]]) -> None:
        n = items[0][1] if len(items) == 1 else sum(n for _, n in items)
        with self._lock:
            self._queued += n
        put = self._q.put
        for item in items:
            put(item)

    def _end(self, exc: IpcwireError) -> None:
        with self._lock:
            if self._end_exc is not None:
                return
            self._end_exc = exc
        self._q.put(_WAKE)
        with self._lock:
            self._space.notify_all()

    def _inbox_bytes(self) -> int:
        return self._queued

    def _taken(self, nbytes: int) -> None:
        with self._lock:
            self._unsent -= nbytes
            if self._space_waiters and self._unsent <= LOW_WATER:
                self._space.notify_all()

    # -- the application's side -----------------------------------------------------------------
    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        data = encode_message(self._codec, obj, self._session.send_limit, self.url)
        self._check_send()
        size = len(data)
        with self._lock:
            if self._unsent > HIGH_WATER:
                self._wait_outbox(timeout)
            self._unsent += size
        try:
            self._loop.call_soon_threadsafe(self._session.push, data)
        except RuntimeError:  # the listener's loop is gone
            raise ChannelClosed(
                f"the listener of {self.url} is closed", endpoint=self.url
            ) from None
        self._n.sent += 1
        self._n.bytes_sent += size

    def _check_send(self) -> None:
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        err = self._session.send_error()
        if err is not None:
            raise err

    def _wait_outbox(self, timeout: float | None) -> None:
        """Wait (holding ``_lock``) until the client has fetched enough."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._space_waiters += 1
        try:
            while self._unsent > HIGH_WATER:
                if self._closed or self._session.client_done is not None:
                    self._check_send()
                self._space.wait(
                    seconds_left(
                        deadline,
                        f"{self.url}: the client is not fetching messages; {self._unsent} "
                        f"bytes wait for it. Nothing was sent",
                        self.url,
                    )
                )
        finally:
            self._space_waiters -= 1

    def recv(self, *, timeout: float | None = None) -> Any:
        obj, n = self._get(timeout)
        self._received([obj], n)
        return obj

    def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        obj, nbytes = self._get(timeout)
        out = [obj]
        q = self._q
        while max_messages is None or len(out) < max_messages:
            try:
                item = q.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Wake):
                q.put(item)  # for the next receive
                break
            if type(item[0]) is Undecodable:
                self._held = item  # its error, at the next receive
                break
            out.append(item[0])
            nbytes += item[1]
        self._received(out, nbytes)
        return out

    def _get(self, timeout: float | None) -> tuple[Any, int]:
        """The next message and its size; raises at the end, on close, or at the timeout, and
        in the place of a message that did not decode."""
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        held = self._held
        if held is not None:
            self._held = None
            return self._checked(held)
        wait = limit(timeout, self.url)
        try:
            if wait is None:
                item = self._q.get()
            elif wait > 0:
                item = self._q.get(timeout=wait)
            else:
                item = self._q.get_nowait()
        except queue.Empty:
            raise Timeout(
                f"no message from {self.url} within {timeout} s", endpoint=self.url
            ) from None
        if isinstance(item, _Wake):
            self._q.put(item)  # every later receive ends the same way
            if self._closed or self._end_exc is None:
                raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
            raise self._end_exc
        return self._checked(item)

    def _checked(self, item: tuple[Any, int]) -> tuple[Any, int]:
        """``item``, or its error if it did not decode (its bytes taken off the queue)."""
        obj = item[0]
        if type(obj) is Undecodable:
            self._received([], item[1])
            raise obj.error
        return item

    def _received(self, out: list[Any], nbytes: int) -> None:
        with self._lock:
            self._queued -= nbytes
            wake = self._session.space_wanted and self._queued <= HIGH_WATER
        self._n.received += len(out)
        self._n.bytes_received += nbytes
        if wake:
            try:
                self._loop.call_soon_threadsafe(self._session.space_available)
            except RuntimeError:
                pass

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._space.notify_all()
        self._q.put(_WAKE)
        try:
            self._loop.call_soon_threadsafe(self._session.server_close, self._failure)
        except RuntimeError:
            pass

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        _note_failure(self._session, et)
        self._close_after(e)

    def _close_after(self, exc: BaseException | None) -> None:
        if not self._closed:
            self._failure = error_reason(exc)
        self.close()

    @property
    def peer(self) -> PeerInfo | None:
        return self._session.peer

    def statistics(self) -> ChannelStatistics:
        n = self._n
        return ChannelStatistics(n.sent, n.received, n.bytes_sent, n.bytes_received, self._queued)


def _note_failure(session: Session, et: type[BaseException] | None) -> None:
    """A handler leaving its channel's ``with`` block with an exception (other than the end
    of its request) failed: a plain request it did not answer gets 500, not 204."""
    if et is not None and not issubclass(et, EndOfChannel) and session.oneshot:
        session.failed = True


class AioServerChannel(AioChannel):
    """A server-side HTTP channel (asyncio), on the server's own loop."""

    def __init__(self, session: Session, codec: Codec, url: str) -> None:
        self.url = url
        self._session = session
        self._codec = codec
        self._inbox: deque[tuple[Any, int]] = deque()
        self._queued = 0
        self._unsent = 0
        self._waiter: asyncio.Future[None] | None = None
        self._space: asyncio.Future[None] | None = None
        self._end_exc: IpcwireError | None = None
        self._closed = False
        self._failure = ""  # a with block left by an exception: the client is told this
        self._n = _Counters()
        session.sink = self

    # -- sink side ------------------------------------------------------------------------------
    def _deliver(self, items: list[tuple[Any, int]]) -> None:
        self._inbox.extend(items)
        self._queued += items[0][1] if len(items) == 1 else sum(n for _, n in items)
        self._wake()

    def _end(self, exc: IpcwireError) -> None:
        if self._end_exc is None:
            self._end_exc = exc
        self._wake()
        self._wake_space()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _wake_space(self) -> None:
        s = self._space
        if s is not None and not s.done():
            s.set_result(None)

    def _inbox_bytes(self) -> int:
        return self._queued

    def _taken(self, nbytes: int) -> None:
        self._unsent -= nbytes
        if self._unsent <= LOW_WATER:
            self._wake_space()

    # -- the application's side -----------------------------------------------------------------
    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        data = encode_message(self._codec, obj, self._session.send_limit, self.url)
        self._check_send()
        if self._unsent > HIGH_WATER:
            await self._wait_outbox(timeout)
        self._unsent += len(data)
        self._session.push(data)
        self._n.sent += 1
        self._n.bytes_sent += len(data)

    def _check_send(self) -> None:
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        err = self._session.send_error()
        if err is not None:
            raise err

    async def _wait_outbox(self, timeout: float | None) -> None:
        while self._unsent > HIGH_WATER:
            self._check_send()
            fut = self._space = asyncio.get_running_loop().create_future()
            try:
                async with within(timeout):
                    await fut
            except TimeoutError:
                raise Timeout(
                    f"{self.url}: the client is not fetching messages; nothing was sent",
                    endpoint=self.url,
                ) from None
            finally:
                self._space = None
        self._check_send()

    async def recv(self, *, timeout: float | None = None) -> Any:
        if self._inbox and not self._closed:
            return self._pop(1)[0]
        await self._wait(timeout)
        return self._pop(1)[0]

    async def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        if not self._inbox or self._closed:
            await self._wait(timeout)
        return self._pop(max_messages)

    def _pop(self, limit: int | None) -> list[Any]:
        inbox = self._inbox
        out: list[Any] = []
        nbytes = 0
        while inbox and (limit is None or len(out) < limit):
            obj, n = inbox.popleft()
            if type(obj) is Undecodable:  # (it did not decode: its error, in its place)
                if out:
                    inbox.appendleft((obj, n))
                    break
                self._queued -= n
                raise obj.error
            out.append(obj)
            nbytes += n
        self._queued -= nbytes
        self._n.received += len(out)
        self._n.bytes_received += nbytes
        if self._session.space_wanted and self._queued <= HIGH_WATER:
            self._session.space_available()
        return out

    async def _wait(self, timeout: float | None) -> None:
        while True:
            if self._closed:
                raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
            if self._inbox:
                return
            if self._end_exc is not None:
                raise self._end_exc
            if timeout == 0:
                raise Timeout(f"no message from {self.url} yet", endpoint=self.url)
            fut = self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with within(timeout):
                    await fut
            except TimeoutError:
                raise Timeout(
                    f"no message from {self.url} within {timeout} s", endpoint=self.url
                ) from None
            finally:
                self._waiter = None

    def close(self) -> None:
        if self._closed or handed_to_loop(self._session.loop, self.close):  # (another thread)
            return
        self._closed = True
        self._wake()
        self._wake_space()
        self._session.server_close(self._failure)

    async def aclose(self) -> None:
        self.close()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        _note_failure(self._session, et)
        await self._aclose_after(e)

    async def _aclose_after(self, exc: BaseException | None) -> None:
        if not self._closed:
            self._failure = error_reason(exc)
        self.close()

    @property
    def peer(self) -> PeerInfo | None:
        return self._session.peer

    def statistics(self) -> ChannelStatistics:
        n = self._n
        return ChannelStatistics(n.sent, n.received, n.bytes_sent, n.bytes_received, self._queued)

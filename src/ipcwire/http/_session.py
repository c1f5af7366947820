"""The server side of one HTTP channel, owned by the event loop that runs the HTTP server.

A *session* joins the HTTP requests of one client into one channel:

* messages the client sends are decoded on the loop and handed to the channel object the
  application holds (the *sink*: a blocking or an asyncio channel), which queues them;
* messages the application sends go into the session's outbox, from which the client's
  pending request (``POST {prefix}/channels/{id}``) or long poll takes them, in order.

Flow control both ways: a delivery waits while the sink holds more than ``HIGH_WATER``
undelivered bytes (so a slow server slows the client), and the sink's senders wait while the
outbox holds more than ``HIGH_WATER`` bytes the client has not fetched.

Only the loop thread calls the methods here, except where a docstring says otherwise.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Protocol

from ipcwire.aio._timeouts import within
from ipcwire.channel import PeerInfo
from ipcwire.errors import ChannelBroken, IpcwireError, LocalProtocolError

__all__ = ["HIGH_WATER", "LOW_WATER", "Session", "Sink"]

HIGH_WATER: Final = 4 * 1024 * 1024
LOW_WATER: Final = 1024 * 1024


class _Expired:
    """A poll's result when its wait ran out."""

    __slots__ = ()


_EXPIRED: Final = _Expired()


def _expire(fut: asyncio.Future[bytes | _Expired | None]) -> None:
    if not fut.done():
        fut.set_result(_EXPIRED)


class Sink(Protocol):
    """What the application's channel object offers to its session."""

    def _deliver(self, items: list[tuple[Any, int]]) -> None:
        """Queue decoded messages (with their wire sizes) for ``recv``."""

    def _end(self, exc: IpcwireError) -> None:
        """No more messages: ``recv`` raises ``exc`` once the queue is empty."""

    def _inbox_bytes(self) -> int:
        """Bytes queued and not yet received by the application (any thread)."""

    def _taken(self, nbytes: int) -> None:
        """The client fetched ``nbytes`` of the outbox (wakes blocked senders)."""


class Session:
    """One channel's state on the server's loop."""

    def __init__(
        self,
        sid: str,
        *,
        oneshot: bool,
        send_limit: int,
        peer: PeerInfo | None,
        loop: asyncio.AbstractEventLoop,
        url: str,
    ) -> None:
        self.id = sid
        self.oneshot = oneshot
        self.send_limit = send_limit  # the client's max_frame
        self.peer = peer
        self.loop = loop
        self.url = url
        self.sink: Sink | None = None
        self.outbox: deque[bytes] = deque()
        self.outbox_bytes = 0
        self.polls: deque[asyncio.Future[bytes | _Expired | None]] = deque()
        self.server_done = False  # the application closed its channel
        # ... after an error on its side (its with block or serve() handler raised): why
        self.server_failure = ""
        self.tells_failure = False  # the client understands the stream's failure mark
        self.client_done: IpcwireError | None = None  # why sending to the client fails now
        self.answered = False  # oneshot: the reply went out
        self.failed = False  # oneshot: the application's handler raised before replying
        self.in_flight = 0
        self.streaming = False  # a GET .../stream takes every message as it comes
        self.last_seen = loop.time()
        self._space: asyncio.Future[None] | None = None
        self.space_wanted = False  # read by the sink's thread
        # The client was answered with the end (all fetched, then None): what a server
        # shutting down waits for (Server.shutdown), calling ``on_told`` then.
        self.told = False
        self.on_told: Callable[[], object] | None = None

    # -- client -> application ----------------------------------------------------------------
    async def deliver(self, items: list[tuple[Any, int]], timeout: float | None) -> bool:
        """Hand messages to the application once its queue has room.

        Returns False if no room came within ``timeout`` (nothing was delivered).
        """
        sink = self.sink
        assert sink is not None
        while sink._inbox_bytes() > HIGH_WATER and self.client_done is None:
            self.space_wanted = True
            if sink._inbox_bytes() <= HIGH_WATER:  # drained meanwhile (another thread)
                break
            fut = self._space = self.loop.create_future()
            try:
                async with within(timeout):
                    await fut
            except TimeoutError:
                return False
            finally:
                self._space = None
                self.space_wanted = False
        sink._deliver(items)
        return True

    def space_available(self) -> None:
        """The application took messages: let a waiting delivery proceed."""
        fut = self._space
        if fut is not None and not fut.done():
            fut.set_result(None)

    # -- application -> client ----------------------------------------------------------------
    def send_error(self) -> IpcwireError | None:
        """Why the application cannot send now (any thread reads this), or None."""
        if self.oneshot and self.answered:
            return LocalProtocolError(
                f"the HTTP request to {self.url} was already answered: a plain HTTP request "
                f"gets exactly one reply (clients that open a channel can receive more)",
                endpoint=self.url,
            )
        return self.client_done

    def push(self, payload: bytes) -> None:
        """Queue one encoded message for the client (or answer a waiting request)."""
        if self.client_done is not None:
            if self.sink is not None:
                self.sink._taken(len(payload))
            return
        polls = self.polls
        while polls:
            fut = polls.popleft()
            if not fut.done():
                fut.set_result(payload)
                if self.sink is not None:
                    self.sink._taken(len(payload))
                return
        self.outbox.append(payload)
        self.outbox_bytes += len(payload)

    def _take(self, max_bytes: int, out: list[bytes]) -> None:
        box = self.outbox
        total = sum(len(p) for p in out)
        taken = 0
        while box and (not out or total + len(box[0]) <= max_bytes):
            p = box.popleft()
            out.append(p)
            total += len(p)
            taken += len(p)
        if taken:
            self.outbox_bytes -= taken
            if self.sink is not None:
                self.sink._taken(taken)

    async def next_messages(
        self, *, many: bool, max_bytes: int, wait: float | None
    ) -> list[bytes] | None:
        """The client's next message(s): ``[]`` if none came within ``wait`` seconds,
        None if the application closed the channel and everything was fetched."""
        out: list[bytes] = []
        if self.outbox:
            if many:
                self._take(max_bytes, out)
            else:
                p = self.outbox.popleft()
                self.outbox_bytes -= len(p)
                if self.sink is not None:
                    self.sink._taken(len(p))
                out.append(p)
            return out
        if self.server_done or self.client_done is not None:
            self._the_end()
            return None
        if wait is not None and wait <= 0:
            return out
        fut: asyncio.Future[bytes | _Expired | None] = self.loop.create_future()
        self.polls.append(fut)
        # A plain timer, not asyncio.timeout(): this runs for every request that waits for
        # a reply, and push() skips a poll that has expired.
        timer = None if wait is None else self.loop.call_later(wait, _expire, fut)
        try:
            first = await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                back = fut.result()
                if isinstance(back, bytes):
                    # The client went away with a message in hand: put it back, in front.
                    self.outbox.appendleft(back)
                    self.outbox_bytes += len(back)
            fut.cancel()
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if isinstance(first, _Expired):
            return out
        if first is None:
            self._the_end()
            return None
        out.append(first)
        if many and self.outbox:
            self._take(max_bytes, out)
        return out

    def _the_end(self) -> None:
        """Nothing more for the client: it is told so now (the caller answers the end)."""
        if not self.told:
            self.told = True
            if self.on_told is not None:
                self.on_told()

    # -- endings ------------------------------------------------------------------------------
    def server_close(self, failure: str = "") -> None:
        """The application closed its channel (``failure``: after an error on its side,
        this one): the client gets the rest, then the end."""
        if not self.server_done:
            self.server_failure = failure
        self.server_done = True
        if not self.outbox:
            self._end_polls()

    def client_close(self, exc: IpcwireError, reason: IpcwireError | None = None) -> None:
        """The client is gone (closed, expired, or the server stopped).

        ``exc`` ends the application's receiving; sending fails with ``reason``.
        """
        if self.client_done is None:
            self.client_done = reason or ChannelBroken(
                f"the client of {self.url} closed the channel", endpoint=self.url
            )
        self._end_polls()
        if self.sink is not None:
            self.sink._end(exc)
            if self.outbox_bytes:
                self.sink._taken(self.outbox_bytes)
        self.outbox.clear()
        self.outbox_bytes = 0
        self.space_available()

    def _end_polls(self) -> None:
        while self.polls:
            fut = self.polls.popleft()
            if not fut.done():
                fut.set_result(None)

    def touch(self) -> None:
        self.last_seen = self.loop.time()

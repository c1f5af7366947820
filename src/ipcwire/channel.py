"""The blocking channel API every mechanism provides.

A :class:`Channel` carries whole messages both ways (or one way, if the mechanism says so).
A :class:`Listener` accepts channels. Mechanisms subclass these; the shared behaviour
(request, iteration, context managers, serve) lives here once.
"""

from __future__ import annotations

import abc
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

from ipcwire._deadline import limit
from ipcwire._droplog import DropLog
from ipcwire.errors import (
    ChannelClosed,
    EndOfChannel,
    IpcwireError,
    ResourceExhausted,
    Timeout,
)
from ipcwire.options import DEFAULT_REQUEST_TIMEOUT

__all__ = ["Channel", "ChannelStatistics", "Listener", "PeerInfo"]

log = logging.getLogger("ipcwire")

# Where a channel that closed itself keeps why (in its __dict__, so that drivers with
# their own attributes need nothing): request() closes it when its reply may still come.
_CLOSED_BECAUSE: Final = "_ipcwire_closed_because"


def closed_because(channel: object, why: str) -> None:
    """Record why ``channel`` closes itself (before it does), for :func:`closed_error`; a
    channel closed already (by its user, say) keeps what it had."""
    state = getattr(channel, "__dict__", None)
    if state is not None and not getattr(channel, "closed", False):
        state.setdefault(_CLOSED_BECAUSE, why)


def cannot_pickle(obj: Any) -> TypeError:
    """Why a channel or listener cannot be pickled: it is this process's connection (a
    socket, a mapping, a thread), which another process cannot use. multiprocessing showed
    "cannot pickle 'socket' object" (or '_native.Ring', or 'memoryview'), naming no way out."""
    what = "listener" if hasattr(obj, "accept") else "channel"
    return TypeError(
        f"cannot pickle the {what} {getattr(obj, 'url', '?')!r}: it is this process's "
        f"connection, which another process cannot use. Open it in the other process instead "
        f"(a multiprocessing child: connect() or listen() in its target, given the URL); to "
        f"hand a child a connection made beforehand, use ipcwire.pipe's ends, which pickle"
    )


def closed_error(channel: Any) -> ChannelClosed:
    """The ChannelClosed of ``channel``: "URL is closed", and why when the channel closed
    itself (a request() that timed out or was interrupted: the user's next call on a shared
    channel otherwise says only "closed", and nobody on that thread closed it)."""
    why = getattr(channel, "__dict__", {}).get(_CLOSED_BECAUSE)
    text = f"{channel.url} is closed" + (f": {why}" if why else "")
    return ChannelClosed(text, endpoint=channel.url)


def timed_out_request(timeout: float | None) -> str:
    return (
        f"a request() on it got no reply within {timeout} s and closed it, so that a late "
        f"reply cannot answer a later request; connect again for a new channel"
    )


def interrupted_request(what: str) -> str:
    return (
        f"a request() on it was {what} with its request out and closed it, so that a late "
        f"reply cannot answer a later request; connect again for a new channel"
    )


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """Who is at the other end, as far as the OS can tell.

    ``pid``/``uid``/``gid`` come from the kernel (SO_PEERCRED) where the mechanism has it;
    ``address`` is the peer's address (host, port) or path where there is one.
    """

    pid: int | None = None
    uid: int | None = None
    gid: int | None = None
    address: str | None = None


def describe_peer(peer: PeerInfo | None) -> str:
    """``peer`` in a log line or a message: "pid 123, uid 1000", an address, or "" when the
    mechanism cannot tell."""
    if peer is None:
        return ""
    parts = [f"pid {peer.pid}"] if peer.pid is not None else []
    if peer.uid is not None:
        parts.append(f"uid {peer.uid}")
    if not parts and peer.address:
        parts.append(str(peer.address))
    return ", ".join(parts)


def log_handler_end(
    url: str, peer: PeerInfo | None, exc: Exception, bound: DropLog | None = None
) -> None:
    """How ``serve()`` reports a handler that ended with ``exc`` (both APIs, same words).

    The channel failing under the handler (the client died, broke the protocol, timed out)
    is a WARNING naming the client, for it is news to whoever runs the server; the listener's
    own close ending its channels is not (DEBUG); any other exception is the handler's bug,
    logged with its traceback. Through ``bound`` (``serve()``'s), the first few of each kind
    in a window are logged one by one and the rest counted in one line: a supervisor that
    kills its agents by the thousand wrote one WARNING per agent.
    """
    who = describe_peer(peer)
    client = f"a client of {url}" + (f" ({who})" if who else "")
    if isinstance(exc, ChannelClosed):
        log.debug("the handler of %s ended: %s", client, exc)
        return
    if isinstance(exc, IpcwireError):
        level, kind, msg, info = logging.WARNING, f"ended by {type(exc).__name__}", (
            "the handler of %s ended: %s"), None  # fmt: skip
        args: tuple[object, ...] = (client, exc)
    else:
        level, kind, msg, info = logging.ERROR, f"raised {type(exc).__name__}", (
            "the handler of %s raised"), exc  # fmt: skip
        args = (client,)
    if bound is None:
        log.log(level, msg, *args, exc_info=info)
    else:
        bound.log(level, kind, msg, *args, exc_info=info)


def _no_thread(url: str, ch: Channel, exc: RuntimeError, streak: int) -> None:
    """``serve()`` could not start a thread for the client on ``ch``: the client is told
    (ResourceExhausted, as the failure of the server's side), and the first of a streak of
    such drops, then one in 100, is a WARNING; the listener goes on serving (it accepts
    again, and clients are served once threads can start)."""
    who = describe_peer(ch.peer)
    err = ResourceExhausted(
        f"{url} cannot start a thread for a client{f' ({who})' if who else ''} ({exc}): the "
        f"process is at its limit of processes or threads (ulimit -u, a container's "
        f"pids.max); raise it, or bound the clients served at once with serve(max_channels=)",
        endpoint=url,
    )
    ch._close_after(err)
    if streak == 1 or streak % 100 == 0:
        log.warning("%s (%d client(s) dropped in a row)", err, streak)


@dataclass(frozen=True, slots=True)
class ChannelStatistics:
    """Counters of one channel (trio style ``statistics()``)."""

    messages_sent: int
    messages_received: int
    bytes_sent: int  # encoded message bytes; framing (headers, newlines) not counted
    bytes_received: int  # the same, as delivered
    buffered_bytes: int = 0  # received, not yet delivered
    dropped: int = 0  # messages dropped by an explicit drop policy; never silent


class Channel(abc.ABC):
    """A connected, message-oriented channel (blocking API).

    Thread safety: one thread may send while another receives; concurrent senders are
    serialised, so their messages never interleave.
    """

    url: str
    # What ``closed`` and ``peer`` report, unless a mechanism overrides the property.
    _closed: bool = False
    _peer: PeerInfo | None = None
    # An error the base recv_many met after it had messages: raised by the next receive.
    _recv_many_error: IpcwireError | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A mechanism that implements ``recv`` and not ``recv_many`` gets the base
        ``recv_many``, which may hold back an error for the next receive. Its ``recv`` is
        wrapped so that the next receive of either kind raises it (see
        :meth:`_raise_deferred`)."""
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("recv")
        if own is not None and cls.recv_many is Channel.recv_many:
            cls.recv = _deferred_first(own)  # type: ignore[method-assign]

    def _raise_deferred(self) -> None:
        deferred = self._recv_many_error
        if deferred is not None:
            self._recv_many_error = None
            if not self.closed:  # closed wins: the receive then raises ChannelClosed
                raise deferred

    # -- what each mechanism implements ---------------------------------------------------
    @abc.abstractmethod
    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        """Send one message.

        Raises:
            FrameTooLarge: over the size limit; nothing was sent.
            Timeout: not sent within ``timeout`` seconds (the peer is not reading). If part of
                the message was written, the channel is then broken and says so.
            ChannelBroken: the peer vanished; ``EndOfChannel`` never comes from send.
            ChannelClosed: this side closed the channel.
        """

    @abc.abstractmethod
    def recv(self, *, timeout: float | None = None) -> Any:
        """Receive one whole message (``timeout=0`` polls).

        Raises:
            EndOfChannel: the peer closed cleanly and every message was delivered.
            Timeout: nothing arrived in time; the channel stays usable.
            FrameTooLarge: the next message is over ``max_frame``; it is skipped, not delivered.
            RemoteProtocolError: the peer sent something that does not decode.
            ChannelBroken: the peer or OS failed (for example it died mid-message).
            ChannelClosed: this side closed the channel.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Close the channel; idempotent, bounded, wakes a thread blocked in ``recv``."""

    @abc.abstractmethod
    def statistics(self) -> ChannelStatistics:
        """Counters of this channel."""

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (or the channel was torn down)."""
        return self._closed

    @property
    def peer(self) -> PeerInfo | None:
        """Who is at the other end, where the mechanism knows."""
        return self._peer

    # -- shared behaviour -----------------------------------------------------------------
    def recv_nowait(self) -> Any:
        """A message already received, without waiting.

        Raises:
            Timeout: none is there yet (also every error of :meth:`recv`).
        """
        return self.recv(timeout=0)

    def send_many(self, objs: Iterable[Any], *, timeout: float | None = None) -> None:
        """Send several messages, in one write where the mechanism allows."""
        for obj in objs:
            self.send(obj, timeout=timeout)

    def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        """Wait for at least one message, then return every message already received
        (up to ``max_messages``) without waiting again. An error met after the first message
        (one that does not decode, say) ends the batch and is raised by the next receive
        (``recv`` or ``recv_many``), so the messages before it are not lost."""
        self._raise_deferred()
        out = [self.recv(timeout=timeout)]
        while max_messages is None or len(out) < max_messages:
            try:
                out.append(self.recv(timeout=0))
            except (Timeout, EndOfChannel):
                break
            except ChannelClosed:
                raise
            except IpcwireError as exc:
                self._recv_many_error = exc
                break
        return out

    def request(self, obj: Any, *, timeout: float | None = DEFAULT_REQUEST_TIMEOUT) -> Any:
        """Send ``obj`` and return the next message: a reply, for strict request/reply peers.

        The default timeout is finite. If it passes, the channel is closed, because a late
        reply would otherwise be taken as the answer to the next request. Threads calling
        ``request()`` on one channel at once take turns (each sends and takes the next
        message before the next one sends), so each gets the reply to its own request from
        a peer that answers in order; ``timeout`` includes the wait for a turn.

        A request interrupted by a signal handler's exception (KeyboardInterrupt) closes the
        channel too, and so does a cancelled asyncio ``request()`` (``asyncio.wait_for``):
        its reply could otherwise answer the next request.

        Raises:
            Timeout: no reply in time (the channel is now closed), or no turn in time (not
                sent; the channel stays open).
            EndOfChannel, ChannelBroken: the peer went away before replying.
        """
        limit(timeout, self.url)  # a timeout that is not one fails before anything is sent
        lock = self.__dict__.get("_ipcwire_turns")
        if lock is None:  # (setdefault: one lock, whichever thread makes it first)
            lock = self.__dict__.setdefault("_ipcwire_turns", threading.Lock())
        if lock.acquire(blocking=False):
            left = timeout
        else:
            start = time.monotonic()
            wait = limit(timeout, self.url)
            if not lock.acquire(timeout=-1 if wait is None else max(wait, 0.0)):
                raise Timeout(
                    f"request to {self.url} not sent: other threads' requests on this channel "
                    f"held it for {timeout} s (they take turns, so that each gets its own "
                    f"reply); raise timeout=, or give each thread a channel of its own",
                    endpoint=self.url,
                )
            left = None if wait is None else max(wait - (time.monotonic() - start), 0.0)
        try:
            return self._exchange(obj, timeout=left)
        except BaseException as exc:
            if not isinstance(exc, Exception):  # KeyboardInterrupt, a handler's SystemExit
                # while its request was out: the reply may still come, and the next request
                # would take it for its own. Closed, as when timeout= runs out, and as
                # promptly: a spawned child's shutdown goes on in the background (the exit
                # waits for it). Before, close() ran it here: Ctrl-C took 2-4 s, and a
                # notebook's kernel restart SIGTERMed the kernel mid-way, orphaning children.
                closed_because(self, interrupted_request(f"interrupted ({type(exc).__name__})"))
                self._close_for_timeout()
            raise
        finally:
            lock.release()

    def _exchange(self, obj: Any, *, timeout: float | None) -> Any:
        """:meth:`request` in its turn (what a driver with a better way overrides)."""
        self.send(obj, timeout=timeout)
        try:
            return self.recv(timeout=timeout)
        except Timeout as exc:
            closed_because(self, timed_out_request(timeout))
            self._close_for_timeout()
            raise Timeout(
                f"no reply from {self.url} within {timeout} s; the channel was closed so that "
                f"a late reply cannot answer a later request. Raise timeout= if the peer is slow",
                endpoint=self.url,
            ) from exc

    def _close_for_timeout(self) -> None:
        """Close after :meth:`request`'s timeout passed (or an interrupt cut it short); a
        driver whose :meth:`close` can take longer than the caller's timeout (a child's
        shutdown) closes at once and finishes the rest in the background."""
        self.close()

    def __iter__(self) -> Iterator[Any]:
        """Messages until the peer closes (EndOfChannel ends the iteration)."""
        while True:
            try:
                yield self.recv()
            except EndOfChannel:
                return

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close_after(e)

    def _close_after(self, exc: BaseException | None) -> None:
        """Close at the end of a ``with`` block that ``exc`` ended (None: it finished).
        Drivers that can tell the peer the block failed override it (docs/errors.md)."""
        self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        raise cannot_pickle(self)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<{type(self).__name__} {self.url} {state}>"


Handler = Callable[[Channel], object]
# How long serve() waits, in all, for its handlers once the listener is closed (the asyncio
# serve() waits as long for its cancelled handler tasks).
SERVE_JOIN_TIMEOUT: Final = 5.0


def _deferred_first(recv: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(recv)
    def recv_after_deferred(self: Channel, *args: Any, **kwargs: Any) -> Any:
        if self._recv_many_error is not None:  # (checked here: no call per message)
            self._raise_deferred()
        return recv(self, *args, **kwargs)

    return recv_after_deferred


class Listener(abc.ABC):
    """Accepts channels (blocking API)."""

    url: str
    _closed: bool = False  # what ``closed`` reports, unless a mechanism overrides it

    @abc.abstractmethod
    def accept(self, *, timeout: float | None = None) -> Channel:
        """Wait for the next client whose handshake succeeded.

        Clients that fail the handshake (wrong token, garbage, silence past the handshake
        timeout) are logged and dropped; they never delay or disturb the others.

        Raises:
            Timeout: no client in time.
            ChannelClosed: the listener was closed.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Stop listening and remove what listening created (socket files...)."""

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self._closed

    def serve(self, handler: Handler, *, max_channels: int | None = None) -> None:
        """Accept clients until the listener is closed, each handled in its own thread.

        ``max_channels``: at most this many clients are handled at once (``None``, the
        default: no limit). Every client being served holds a thread, an idle one too (its
        handler waits in ``recv()``), and its channel's buffers: with unix or tcp about
        280 KiB per client (500 idle clients measured: 500 threads, 140 MiB), so a local
        process that opens and keeps connections costs the server that much each. With a
        limit, the next client is accepted only when a handler returns: up to the listener's
        ``backlog=`` more wait connected, their messages unread, and the clients after them
        wait in ``connect()`` (a ``Timeout`` once its ``timeout=`` passes). Set it where many,
        or untrusted, local processes can connect.

        Exceptions from ``handler`` are logged (see :func:`log_handler_end`: a client that
        failed under it is a WARNING naming the client); the channel is closed after it
        returns.
        Returns when the listener is closed (from another thread or a signal handler),
        after waiting for running handlers (their channels closed, so that those blocked in
        them wake), up to ``SERVE_JOIN_TIMEOUT`` (5 s) in all; handlers still busy then are
        left to finish in their (daemon) threads.
        """
        cond = self.__dict__.setdefault("_serve_cond", threading.Condition())
        with cond:
            self.__dict__["_serving"] = self.__dict__.get("_serving", 0) + 1
        try:
            self._serve(handler, max_channels)
        finally:
            with cond:
                self.__dict__["_serving"] -= 1
                cond.notify_all()

    def _wait_served(self, timeout: float) -> bool:
        """Wait up to ``timeout`` until no :meth:`serve` of this listener runs; whether so.

        A blocking graceful shutdown closes the listener, then raises ``SystemExit`` in the
        main thread: raised while ``serve()`` was still closing its channels, it ended the
        process before they were closed, and their clients saw the peer die (ws: 1006, unix
        with goodbye frames: ChannelBroken) instead of the end. The shutdown waits for this
        first (``ipcwire.signals._served``)."""
        cond: threading.Condition | None = self.__dict__.get("_serve_cond")
        if cond is None:
            return True
        with cond:
            return cond.wait_for(lambda: not self.__dict__.get("_serving"), timeout)

    def _serve(self, handler: Handler, max_channels: int | None) -> None:
        slots = threading.BoundedSemaphore(max_channels) if max_channels else None
        active: dict[Channel, threading.Thread] = {}
        lock = threading.Lock()
        no_thread = 0  # clients dropped in a row for want of a thread
        ends = DropLog(self.url, "handlers ended by an error")

        def run(ch: Channel) -> None:
            logged: Exception | None = None
            try:
                with ch:  # (an exception's goodbye tells the client, after the log)
                    try:
                        handler(ch)
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
                with lock:
                    active.pop(ch, None)
                if slots is not None:
                    slots.release()

        try:
            while True:
                if slots is not None:
                    slots.acquire()
                try:
                    ch = self.accept()
                except ChannelClosed:
                    if slots is not None:
                        slots.release()
                    return
                ends.flush()  # (the count of a window that is over, if any)
                t = threading.Thread(target=run, args=(ch,), name=f"ipcwire {ch.url}", daemon=True)
                with lock:
                    active[ch] = t
                try:
                    t.start()
                except RuntimeError as exc:  # "can't start new thread": a process limit
                    with lock:
                        active.pop(ch, None)
                    if slots is not None:
                        slots.release()
                    no_thread += 1
                    _no_thread(self.url, ch, exc, no_thread)
                else:
                    no_thread = 0
        finally:
            # The listener is closed: close the remaining channels so blocked handlers wake
            # (they see ChannelClosed), then wait for them, boundedly.
            with lock:
                remaining = list(active.items())
            for ch, _ in remaining:
                ch.close()
            # One 5 s wait for them all, not 5 s each: 4 handlers busy in their work (not in
            # recv) kept serve() 20 s after close(); 200 would have kept it 1000 s.
            deadline = time.monotonic() + SERVE_JOIN_TIMEOUT
            for _, t in remaining:
                t.join(timeout=max(deadline - time.monotonic(), 0.0))
            ends.flush(final=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        raise cannot_pickle(self)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "listening"
        return f"<{type(self).__name__} {self.url} {state}>"

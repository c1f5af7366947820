"""What both D-Bus drivers keep and decide for a channel and its connection without waiting.

The blocking driver (a reader thread, Conditions) and the asyncio driver (dbus-fast's
``MessageBus``, futures) differ only in how they wait and how a message reaches the bus. The
rest is here once: a channel's queue, window, errors and counters (:class:`ChannelState`); how
a connection's incoming calls reach their channel or listener, and the connection's share of
the window (:class:`HubState`). A listener's pending handshakes are in ``_listener_state.py``,
a subscription's events in ``_subscription_state.py``. Each driver subclasses these with its
waiting; the blocking driver calls them with its locks held, and its hub's lock is a
``threading.Lock`` where the asyncio driver's is :data:`NO_LOCK` (one event loop). The
messages, addresses and errors are in ``_proto.py``.
"""

from __future__ import annotations

import abc
import logging
from collections import deque
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from dbus_fast import Message, MessageFlag, MessageType

from ipcwire._core.wire import WireFormat
from ipcwire.channel import ChannelStatistics, PeerInfo
from ipcwire.dbus._proto import (
    BUS_NAME,
    ERROR_CLOSED,
    ERROR_REFUSED,
    INTERFACE,
    MAX_MESSAGE,
    WINDOW,
    WINDOW_BYTES,
    close_call,
    error_text,
    fail_call,
    failure_reason,
    peer_failed,
)
from ipcwire.errors import (
    ChannelBroken,
    ChannelClosed,
    EndOfChannel,
    FrameTooLarge,
    IpcwireError,
    RemoteProtocolError,
    Timeout,
)

if TYPE_CHECKING:
    from ipcwire.dbus._listener_state import ListenerState

__all__ = [
    "NO_LOCK",
    "ChannelState",
    "HubState",
    "connection_ended",
    "daemon_closed",
    "not_read",
    "part_written",
]

log = logging.getLogger("ipcwire")

NO_LOCK: AbstractContextManager[Any] = nullcontext()  # one event loop: no lock
# what each call carries
SIGNATURES = {"Handshake": "ss", "Deliver": "say", "Close": "s", "Fail": "ss"}
INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"


def connection_ended(url: str, why: str, again: str, cause: BaseException | None) -> ChannelBroken:
    """What the users of a bus connection raise once it ended (``why``): the daemon stopped
    or dropped it; ``again`` says what to open again."""
    err = ChannelBroken(
        f"{url}: the bus connection ended: {why}. The D-Bus daemon stopped or dropped this "
        f"connection: {again}",
        endpoint=url,
    )
    err.__cause__ = cause
    return err


def daemon_closed(exc: BaseException) -> str:
    """``why`` for :func:`connection_ended` when reading from the daemon failed with ``exc``."""
    return f"the D-Bus daemon closed the connection ({str(exc) or 'end of stream'})"


def part_written(timeout: float, written: int, size: int) -> str:
    """Why a connection was cut: a send timed out after writing part of a message (the
    daemon cannot make sense of anything after it)."""
    return (
        f"the D-Bus daemon did not read a message within {timeout:.3g} s (a send timed out "
        f"after writing {written} of its {size} bytes)"
    )


def not_read(url: str, timeout: float, *, cut: bool) -> Timeout:
    """The Timeout of a send (a channel's, or ``publish``) that the daemon did not read
    within ``timeout``: nothing was sent, or (``cut``) part of it, and the connection was
    cut for it."""
    if not cut:
        return Timeout(
            f"send to {url} timed out after {timeout:.3g} s: the D-Bus daemon is not reading "
            f"this connection; nothing was sent",
            endpoint=url,
        )
    return Timeout(
        f"send to {url} timed out after {timeout:.3g} s, part-way through the message (the "
        f"D-Bus daemon is not reading); the bus connection was cut: open the channel again",
        endpoint=url,
    )


# -- a channel -------------------------------------------------------------------------------
class ChannelState(abc.ABC):
    """One channel's state: the received calls not yet taken, the unacknowledged window, how
    it ended, the counters. The drivers add the waiting (and, blocking, the lock)."""

    def __init__(
        self,
        hub: HubState,
        peer_name: str,
        path: str,
        chan: str,
        wire: WireFormat,
        url: str,
        peer: PeerInfo | None = None,
        *,
        fails: bool = False,
    ) -> None:
        self.url = url
        self.key = (peer_name, chan)
        self._hub = hub
        self._dest = peer_name
        self._path = path
        self._chan = chan
        self._wire = wire
        self._encode = wire.encoder
        self._decode = wire.decode
        self._limit = min(wire.send_limit, MAX_MESSAGE)
        self._max_frame = wire.max_frame
        self._peer: PeerInfo | None = peer or PeerInfo(address=peer_name)
        self._queue: deque[Message] = deque()
        self._queued_bytes = 0  # payload bytes in _queue
        self._overrun: RemoteProtocolError | None = None  # the peer ignored the window
        self._inflight = 0
        self._inflight_bytes = 0
        self._send_error: IpcwireError | None = None
        self._closed = False
        self._eof = False
        self._gone: IpcwireError | None = None
        self._fails = fails  # the peer takes Fail (the handshake agreed on it)
        self._reason = ""  # why this side ends after an error (_close_after); "": cleanly
        self._failure: ChannelBroken | None = None  # the peer's Fail: how this channel ends
        self._sent = self._received = self._bytes_sent = self._bytes_received = 0

    # -- what the hub calls; the drivers wake their waiters -------------------------------------
    @abc.abstractmethod
    def _incoming(self, msg: Message) -> None:
        """A ``Deliver`` call for this channel."""

    @abc.abstractmethod
    def _peer_closed(self) -> None:
        """The peer's ``Close``."""

    @abc.abstractmethod
    def _lost(self, err: IpcwireError) -> None:
        """The channel can no longer work (``err`` says why)."""

    @abc.abstractmethod
    def _room(self) -> None:
        """The connection has room again for a message (wake a send that waits for it)."""

    def _peer_failed(self, reason: str) -> None:
        """The peer's ``Fail``: as its ``Close``, but the end is ``ChannelBroken``."""
        if self._eof:
            return  # it ended already
        self._failure = peer_failed(self.url, reason, client=self._hub.client)
        self._peer_closed()

    def _peer_gone(self) -> None:
        if self._eof:
            return  # it closed the channel first: a clean end
        self._lost(
            ChannelBroken(
                f"{self.url}: the peer's connection ({self._dest}) left the bus without "
                f"closing the channel (it exited or crashed)",
                endpoint=self.url,
            )
        )

    def _enqueue(self, msg: Message) -> tuple[str, str] | None:
        """Queue a ``Deliver`` for ``recv``: None, or the refusal to send its sender instead
        (an error name and text; the blocking driver sends it once its lock is released).

        A peer keeping the window never has more than ``WINDOW`` messages (``WINDOW_BYTES``
        bytes, one message always) unacknowledged, and a message is acknowledged only once
        taken, so the queue never holds more. A peer past it does not follow the protocol:
        its message is refused (its sender gets ``ERROR_REFUSED``) and so is every later one,
        while what it sent within the window is still received; then ``recv`` raises
        ``RemoteProtocolError``. Without this the queue grew as long as the peer sent.
        """
        if self._closed:
            return ERROR_CLOSED, "the channel is closed"
        size = len(msg.body[1])
        if self._overrun is None and (
            len(self._queue) >= WINDOW or (self._queue and self._queued_bytes + size > WINDOW_BYTES)
        ):
            self._overrun = RemoteProtocolError(
                f"{self.url}: the peer ({self._dest}) sent more than ipcwire's flow-control "
                f"window allows ({WINDOW} messages or {WINDOW_BYTES} bytes not yet received "
                f"here): it does not follow ipcwire's D-Bus protocol. What it sent within the "
                f"window was received; the rest was refused. Fix the peer's sender "
                f"(docs/mechanisms/dbus.md, flow control)",
                endpoint=self.url,
            )
            log.warning("%s", self._overrun)
        if self._overrun is not None:
            return ERROR_REFUSED, "over the flow-control window"
        self._queue.append(msg)
        self._queued_bytes += size
        return None

    # -- sending -----------------------------------------------------------------------------
    def _payload(self, obj: Any) -> bytes:
        """``obj`` encoded, as bytes.

        Raises:
            FrameTooLarge: over what the peer or the bus takes.
        """
        data = self._encode(obj)
        payload = data if type(data) is bytes else bytes(data)
        if len(payload) > self._limit:
            raise FrameTooLarge(
                f"message of {len(payload)} bytes not sent to {self.url}: over the limit of "
                f"{self._limit} bytes (the peer's max_frame, or what a bus carries); raise "
                f"max_frame= on both sides, or use unix:// for large messages",
                size=len(payload),
                limit=self._limit,
                endpoint=self.url,
            )
        return payload

    def _may_send(self, size: int) -> bool:
        """Whether a message of ``size`` bytes fits the window now (one always may go), and
        the connection's: True takes a slot of it (give it back with ``_hub.free_slot()``).

        Raises:
            ChannelClosed, ChannelBroken: it never will.
        """
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        if self._send_error is not None:
            raise self._send_error
        if self._eof:
            raise ChannelBroken(
                f"cannot send to {self.url}: the peer closed its end"
                + ("" if self._failure is None else " after an error on its side"),
                endpoint=self.url,
            )
        if self._gone is not None:
            raise self._gone
        fits = not self._inflight or (
            self._inflight < self._hub.window and self._inflight_bytes + size <= WINDOW_BYTES
        )
        return fits and self._hub.take_slot(self)

    def _window_full(self, timeout: float | None) -> str:
        return (
            f"send to {self.url} timed out after {timeout} s: the peer is not taking "
            f"messages ({self._inflight} unacknowledged); nothing was sent"
        )

    def _settled(self, size: int, err: IpcwireError | None, reply: Message | None) -> None:
        """A message left the window: acknowledged (``reply``) or failed (``err``); the first
        failure is what the next send raises."""
        self._inflight -= 1
        self._inflight_bytes -= size
        if self._send_error is not None:
            return
        if err is not None:
            self._send_error = err
        elif reply is not None and reply.message_type is MessageType.ERROR:
            why = (
                "the peer closed the channel"
                if reply.error_name == ERROR_CLOSED
                else error_text(reply)
            )
            self._send_error = ChannelBroken(
                f"a message to {self.url} was not delivered: {why}", endpoint=self.url
            )

    # -- receiving ---------------------------------------------------------------------------
    def _next(self) -> Message | None:
        """The next received call, or None while there is none.

        Raises:
            ChannelClosed, EndOfChannel, ChannelBroken: none will come.
        """
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        if self._queue:
            msg = self._queue.popleft()
            self._queued_bytes -= len(msg.body[1])
            return msg
        if self._overrun is not None:
            raise self._overrun
        if self._eof:
            if self._failure is not None:
                raise self._failure
            raise EndOfChannel(f"{self.url} closed its end", endpoint=self.url)
        if self._gone is not None:
            raise self._gone
        return None

    def _unpack(self, msg: Message) -> Any:
        """The message a taken (and acknowledged) ``Deliver`` carries.

        Raises:
            FrameTooLarge: over max_frame (skipped).
        """
        payload: bytes = msg.body[1]
        self._received += 1
        self._bytes_received += len(payload)
        if len(payload) > self._max_frame:
            raise FrameTooLarge(
                f"a message of {len(payload)} bytes from {self.url} is over max_frame="
                f"{self._max_frame}; it was skipped",
                size=len(payload),
                limit=self._max_frame,
                endpoint=self.url,
            )
        return self._decode(memoryview(payload))

    # -- the end -----------------------------------------------------------------------------
    def _failing(self, exc: BaseException | None) -> None:
        """A ``with`` block (or ``serve()`` handler) around the channel ended by ``exc``:
        the close that follows tells the peer (``_say_closed``)."""
        self._reason = failure_reason(exc)

    def _shut(self) -> list[Message]:
        """Mark the channel closed; the received calls nobody will take."""
        self._closed = True
        unread = list(self._queue)
        self._queue.clear()
        self._queued_bytes = 0
        return unread

    def _say_closed(self, unread: list[Message]) -> None:
        """Refuse what was never read, tell the peer (unless it is gone), leave the hub.

        The end goes behind every message already sent: ``Close``, or after an error
        ``Fail`` to a peer that takes it. An older peer does not: a client then sends
        nothing, and its connection leaving the bus (``release`` hangs up) is what the
        listener sees (``ChannelBroken``); a listener's channel sends ``Close``, as before.
        """
        for msg in unread:  # never delivered: tell their sender
            self._hub.refuse(msg, ERROR_CLOSED, "the channel was closed before reading this")
        if not self._eof and self._gone is None:
            if self._reason and self._fails:
                self._hub.send_after_sent(
                    fail_call(self._dest, self._path, self._chan, self._reason)
                )
            elif not self._reason or not self._hub.client:
                self._hub.send_after_sent(close_call(self._dest, self._path, self._chan))
        self._hub.release(self)

    @property
    def wire(self) -> WireFormat:
        """The codec in use; ``wire.send_limit`` is the peer's max_frame."""
        return self._wire

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            messages_sent=self._sent,
            messages_received=self._received,
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
            buffered_bytes=self._queued_bytes,
        )


# -- a bus connection's routing --------------------------------------------------------------
class HubState(abc.ABC):
    """Routes the calls arriving on one bus connection to its channels and listener."""

    def __init__(
        self,
        *,
        client: bool,
        lock: AbstractContextManager[Any],
        window: tuple[int, int | None] = (WINDOW, None),
    ) -> None:
        self.client = client
        # unacknowledged messages a channel may have, and the connection (see _proto.window)
        self.window, self.connection_window = window
        self.inflight = 0  # counted only under a connection_window
        self._waiting: set[ChannelState] = set()  # channels waiting for a slot
        self.lock = lock  # guards channels, early, opened and users
        self.channels: dict[tuple[str, str], ChannelState] = {}
        self.listener: ListenerState | None = None
        self.early: list[Message] = []  # a client's messages that beat its channel's setup
        self.opened = False
        self.users = 0
        self.error: IpcwireError | None = None  # why the connection ended

    @abc.abstractmethod
    def send(self, msg: Message) -> None:
        """Send without waiting; a failure is left to the connection's end to report."""

    def send_after_sent(self, msg: Message) -> None:
        """Send ``msg`` behind every message already sent (a channel's Close: one that
        overtook them would make the peer refuse them as sent to a closed channel)."""
        self.send(msg)

    @abc.abstractmethod
    def _unused(self) -> None:
        """The last user is gone: hang up."""

    def take_slot(self, ch: ChannelState) -> bool:
        """Take a slot of the connection's window for a message of ``ch``; False (and ``ch``
        is woken through ``_room`` later) when there is none."""
        if self.connection_window is None:
            return True
        with self.lock:
            if self.inflight >= self.connection_window:
                self._waiting.add(ch)
                return False
            self.inflight += 1
            return True

    def free_slot(self) -> None:
        """A message left the connection's window (call it without a channel's lock held)."""
        if self.connection_window is None:
            return
        with self.lock:
            self.inflight -= 1
            waiting, self._waiting = self._waiting, set()
        for ch in waiting:
            ch._room()

    def refuse(self, msg: Message, name: str, text: str) -> None:
        self.send(Message.new_error(msg, name, text))

    def register(self, ch: ChannelState) -> None:
        with self.lock:
            self.opened = True
            self.channels[ch.key] = ch
            self.users += 1
            early, self.early = self.early, []
        for msg in early:
            self.route(msg)

    def release(self, ch: ChannelState | None = None) -> None:
        """One user (a channel or the listener) is done; the last one disconnects."""
        with self.lock:
            if ch is not None:
                self.channels.pop(ch.key, None)
            self.users -= 1
            last = self.users <= 0
        if last:
            self._unused()

    def route(self, msg: Message) -> bool | None:
        """Hand ``msg`` to its channel or the listener: True if it was an ipcwire call that
        was handled, None otherwise (signals included)."""
        if msg.message_type is MessageType.SIGNAL:
            if msg.member == "NameOwnerChanged" and msg.sender == BUS_NAME and not msg.body[2]:
                self.peer_left(msg.body[0])
            return None
        if msg.message_type is not MessageType.METHOD_CALL or msg.interface != INTERFACE:
            return None
        member = msg.member
        takes = SIGNATURES.get(member or "")
        if takes is not None and msg.signature != takes:  # not from an ipcwire peer
            if not msg.flags & MessageFlag.NO_REPLY_EXPECTED:
                self.refuse(
                    msg,
                    INVALID_ARGS,
                    f"{INTERFACE}.{member} takes ({takes}), not ({msg.signature})",
                )
            return True
        if member in {"Deliver", "Close", "Fail"}:
            key = (msg.sender, msg.body[0])
            held: bool | None = None  # not for a channel being set up
            with self.lock:
                ch = self.channels.get(key)
                if ch is None and self.client and not self.opened:
                    # the channel is being set up: hold it. A listener sends a window of
                    # Delivers and its end at most; one more shows the channel it overran
                    # the window (replayed through _enqueue), the rest are refused here
                    held = len(self.early) < WINDOW + 2
                    if held:
                        self.early.append(msg)
            if held is not None:
                if not held and member == "Deliver":
                    self.refuse(msg, ERROR_REFUSED, "over the flow-control window")
                return True
            if ch is None:
                if member == "Deliver":
                    self.refuse(msg, ERROR_CLOSED, "the channel is closed")
            elif member == "Deliver":
                ch._incoming(msg)
            elif member == "Close":
                ch._peer_closed()
            else:
                ch._peer_failed(msg.body[1])
            return True
        if member == "Handshake" and self.listener is not None:
            self.listener._handshake(msg)
            return True
        return None

    def peer_left(self, name: str) -> None:
        with self.lock:
            gone = [ch for (peer, _), ch in self.channels.items() if peer == name]
        for ch in gone:
            ch._peer_gone()
        if self.listener is not None:
            self.listener._forget(name)

    def lost(self, url: str, why: str, cause: BaseException | None) -> None:
        """The connection ended (``why``): every channel and the listener learn it."""
        err = self.error = connection_ended(
            url, why, "open the channel (or listener) again once the bus is back", cause
        )
        with self.lock:
            chans = list(self.channels.values())
        for ch in chans:
            ch._lost(err)
        if self.listener is not None:
            self.listener._wake()

"""D-Bus, asyncio driver: its bus connections (dbus-fast's native asyncio ``MessageBus``).

Opening one (dbus-fast's writer made to wait when the socket buffer is full), a method call
with a timeout, the peer's credentials, learning that a connection ended, and the hub that
routes a connection's calls to its channels and listener and hangs up once the last of them is
gone. It stands apart from ``aio.py`` (the channel, listener and subscription, and connect,
listen and subscribe) as ``_conn.py`` does from ``blocking.py``: what a connection needs of
dbus-fast, not what ipcwire's endpoints do with it. The names keep the underscore they had in
``aio.py``: they are the driver's own, not API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from ipcwire._deadline import limit
from ipcwire._oserror import OUT_OF_RESOURCES, translate
from ipcwire.aio._timeouts import within
from ipcwire.channel import PeerInfo
from ipcwire.dbus._proto import (
    HOW_TO_START,
    bus_call,
    error_reply,
    peer_from_credentials,
    user_refused,
)
from ipcwire.dbus._state import NO_LOCK, HubState, daemon_closed, not_read, part_written
from ipcwire.errors import ChannelBroken, IpcwireError, MechanismUnavailable, Timeout

__all__ = [
    "_CLOSE_TIMEOUT",
    "_EagainIsNotFatal",
    "_Hub",
    "_call",
    "_credentials",
    "_open_bus",
    "_retrieve_write_error",
    "_when_disconnected",
]

log = logging.getLogger("ipcwire")

_CLOSE_TIMEOUT = 2.0


class _EagainIsNotFatal:
    """dbus-fast's asyncio writer treats EAGAIN from ``send`` (a full socket buffer, which a
    burst of messages reaches) as a broken connection and disconnects (python-dbus-next #153,
    inherited by dbus-fast). Returning "0 bytes written" instead makes it wait for the socket
    to be writable, as it does after a partial write."""

    __slots__ = ("_sock",)

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def send(self, data: Any) -> int:
        try:
            return int(self._sock.send(data))
        except BlockingIOError:
            return 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


async def _open_bus(address: str, url: str, timeout: float) -> MessageBus:
    try:
        async with within(timeout):
            bus = MessageBus(bus_address=address, negotiate_unix_fd=False)
            await bus.connect()
            writer = getattr(bus, "_writer", None)
            if writer is not None and hasattr(writer, "sock"):
                writer.sock = _EagainIsNotFatal(writer.sock)
            return bus
    except TimeoutError:
        raise MechanismUnavailable(
            f"the D-Bus daemon at {address} did not answer within {timeout} s ({url})"
        ) from None
    except (BrokenPipeError, ConnectionResetError, EOFError) as exc:
        # connected and authenticated (a refusal is AuthError), then dropped at Hello
        raise user_refused(address, url) from exc
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno in OUT_OF_RESOURCES:
            # this process is out of descriptors: the daemon is not the problem
            raise translate(exc, address, "connecting to the D-Bus daemon at") from exc
        raise MechanismUnavailable(
            f"cannot reach the D-Bus daemon at {address} ({exc}); is it running? {HOW_TO_START}"
        ) from exc


def _retrieve_write_error(bus: MessageBus) -> None:
    """Mark the error of the write that failed as seen. dbus-fast's ``call()`` never looks at
    the future of its write, so it would be logged as "Future exception was never retrieved"
    when collected, with a traceback, at any later point of the program (and formatting that
    traceback during a compile trips CPython 3.11.7's AST recursion check: SystemError)."""
    fut = getattr(getattr(bus, "_writer", None), "fut", None)
    if isinstance(fut, asyncio.Future) and fut.done() and not fut.cancelled():
        fut.exception()


def _when_disconnected(
    bus: MessageBus, callback: Callable[[BaseException | None], None]
) -> asyncio.Future[Any]:
    """Call ``callback(error)`` once the bus connection has ended (``None``: it was closed,
    without an error); the future that completes then.

    The callback hangs on dbus-fast's own disconnect future (what ``wait_for_disconnect``
    awaits) rather than on a task awaiting it: a task would outlive a connection its owner
    never closed, and be "destroyed but pending" once the loop closes. Should a dbus-fast
    version lack that future, a task waits instead (ended by the disconnection).
    """
    fut: asyncio.Future[Any] | None = getattr(bus, "_disconnect_future", None)
    if not isinstance(fut, asyncio.Future):
        waiting = bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
        fut = asyncio.get_running_loop().create_task(waiting)

    def done(f: asyncio.Future[Any]) -> None:
        if not f.cancelled():
            callback(f.exception())  # also marks an error as retrieved

    fut.add_done_callback(done)
    return fut


async def _call(bus: MessageBus, msg: Message, timeout: float | None, url: str) -> Message:
    """A method call's reply.

    Raises:
        DbusError: an error reply. Timeout: no reply in time. ChannelBroken: the connection
        failed.
    """
    try:
        async with within(timeout):
            reply = await bus.call(msg)
    except TimeoutError:
        raise Timeout(f"no reply to {msg.member} within {timeout} s", endpoint=url) from None
    except Exception as exc:
        raise ChannelBroken(f"{url}: the bus connection failed: {exc}", endpoint=url) from exc
    if reply.message_type is MessageType.ERROR:
        raise error_reply(msg, reply, url)
    return reply


class _Hub(HubState):
    """Routes the calls arriving on one bus connection (a dbus-fast message handler)."""

    def __init__(
        self, bus: MessageBus, url: str, *, client: bool, window: tuple[int, int | None]
    ) -> None:
        super().__init__(client=client, lock=NO_LOCK, window=window)
        self.bus = bus
        self.url = url
        self.loop = asyncio.get_running_loop()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closing: asyncio.Task[Any] | None = None
        self.cut: str | None = None  # why ipcwire cut the connection (see write)
        bus.add_message_handler(self.route)
        self.disconnected = _when_disconnected(bus, self._ended)

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def wait_closed(self) -> None:
        """Wait (boundedly) for the hang-up, when the last user is gone: the last round trip,
        then the end of the connection (its socket closed)."""
        if self.closing is not None:
            await asyncio.wait([self.closing, self.disconnected], timeout=_CLOSE_TIMEOUT * 2)

    def _ended(self, exc: BaseException | None) -> None:
        _retrieve_write_error(self.bus)
        if self.cut is not None:
            return  # reported when it was cut (_take_back)
        if exc is not None:
            self.lost(self.url, daemon_closed(exc), exc)
        else:
            self.lost(self.url, "the bus connection was closed", None)

    def _unused(self) -> None:
        if self.loop.is_closed():
            self._hang_up_without_loop()
        elif self.closing is None:
            self.closing = self.spawn(self._disconnect())

    def _hang_up_without_loop(self) -> None:
        """A close after the loop ended (a channel or listener outlived ``asyncio.run()``):
        nothing can be written on this connection any more, for any of its users, so hang up
        at once (the daemon tells the peers this connection is gone: their channels end as a
        vanished peer's) and close the socket, which dbus-fast closes only from its loop."""
        self.bus.disconnect()
        for part in (getattr(self.bus, "_stream", None), getattr(self.bus, "_sock", None)):
            if part is not None:
                with contextlib.suppress(OSError):
                    part.close()

    async def _disconnect(self) -> None:
        # A round trip to the daemon after our last message means it has routed that
        # message (a Close, say) before we hang up.
        try:
            if self.bus.connected:  # (a call on an ended connection writes to a closed socket)
                async with within(_CLOSE_TIMEOUT):
                    await self.bus.call(bus_call("GetId"))
        except Exception as exc:
            log.debug("%s: the last round trip before hanging up failed: %s", self.url, exc)
        finally:  # also when cancelled: the loop is ending (asyncio.run) after a sync close()
            self.bus.disconnect()

    def send(self, msg: Message) -> None:
        if self.loop.is_closed():
            # (a close after the loop ended): the connection can carry nothing for anyone
            self._hang_up_without_loop()
            return
        if self.error is not None or not self.bus.connected:
            return
        try:
            fut = self.bus.send(msg)
        except OSError:
            return  # the connection is going; _ended reports it
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def write(self, msg: Message, timeout: float | None) -> None:
        """Send ``msg`` and wait until the socket took all of it, at most ``timeout``
        seconds: what keeps a sender from queueing without limit in dbus-fast's writer
        when the daemon does not read. A message not written in time is taken back from
        the writer (nothing was sent); one written in part cuts the connection (the daemon
        could make no sense of what followed), as the blocking driver does.

        Raises:
            Timeout: not written within ``timeout``.
            ChannelBroken: the connection ended (or was cut).
        """
        if self.error is not None:
            raise self.error
        if not self.bus.connected:  # ended, not yet reported: no write on a closed socket
            raise ChannelBroken(f"{self.url}: the bus connection ended", endpoint=self.url)
        fut = self.bus.send(msg)
        if not fut.done():
            await asyncio.wait(
                (fut, self.disconnected),
                timeout=limit(timeout, self.url),
                return_when=asyncio.FIRST_COMPLETED,
            )
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            return
        if not fut.done() and not self.disconnected.done():
            assert timeout is not None
            raise self._take_back(fut, timeout)
        err = self.error or ChannelBroken(
            f"{self.url}: the bus connection ended before the message was sent", endpoint=self.url
        )
        raise err from (fut.exception() if fut.done() and not fut.cancelled() else None)

    def _take_back(self, fut: asyncio.Future[Any], timeout: float) -> Timeout:
        """Withdraw the message of ``fut`` from dbus-fast's writer: the Timeout that says
        nothing was sent, or that the connection was cut after part of it."""
        writer = getattr(self.bus, "_writer", None)
        queued = getattr(writer, "messages", None)
        entry = None if queued is None else next((m for m in queued if m[2] is fut), None)
        fut.cancel()
        if entry is not None:  # not begun: nothing of it was written
            assert queued is not None
            queued.remove(entry)
            return not_read(self.url, timeout, cut=False)
        written, size = 0, 0
        if writer is not None and getattr(writer, "fut", None) is fut:
            buf = getattr(writer, "buf", None)
            written, size = int(getattr(writer, "offset", 0)), len(buf or b"")
            if buf is not None and not written:  # begun, but the socket took none of it
                writer.buf = None
                return not_read(self.url, timeout, cut=False)
        # written in part (or where dbus-fast keeps it unknown): the rest cannot follow
        self.cut = part_written(timeout, written, size)
        self.bus.disconnect()
        self.lost(self.url, f"{self.cut}, so ipcwire cut the connection", None)
        return not_read(self.url, timeout, cut=True)

    def send_after_sent(self, msg: Message) -> None:
        # A channel's send() hands its message to a task of its own (``bus.call``), which
        # writes it when it first runs: the loop runs callbacks in order, so a write
        # scheduled now comes after theirs. (Written at once, a Close sent right after
        # send() overtook the message, and the peer refused it: lost.)
        if self.loop.is_closed():
            self._hang_up_without_loop()
        else:
            self.loop.call_soon(self.send, msg)


async def _credentials(bus: MessageBus, name: str, url: str) -> PeerInfo:
    try:
        reply = await _call(bus, bus_call("GetConnectionCredentials", "s", [name]), 10.0, url)
    except IpcwireError:
        return PeerInfo(address=name)
    return peer_from_credentials(reply.body[0], name)

"""D-Bus, asyncio driver: dbus-fast's native asyncio ``MessageBus`` (no threads).

Same protocol and behaviour as the blocking driver (``_proto.py``): one bus connection per
client channel; a listener's channels share its connection, routed by a message handler.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from ipcwire._core.handshake import ServerHandshake
from ipcwire._core.url import Endpoint, parse_url
from ipcwire._core.wire import WireFormat
from ipcwire._stream.retry import backoff_delays
from ipcwire.aio.channel import AioChannel, AioListener
from ipcwire.channel import ChannelStatistics, PeerInfo
from ipcwire.dbus._proto import (
    BUS_NAME,
    CLIENT_PATH,
    ERROR_CLOSED,
    ERROR_REFUSED,
    HOW_TO_START,
    INTERFACE,
    MAX_MESSAGE,
    WINDOW,
    WINDOW_BYTES,
    Target,
    bus_address,
    bus_call,
    close_call,
    deliver_call,
    error_text,
    event_rule,
    event_signal,
    handshake_call,
    is_call,
    owner_changed_rule,
    parse_target,
)
from ipcwire.dbus.blocking import _options, _strip, handshakes, peer_from_credentials
from ipcwire.errors import (
    AddressInUse,
    ChannelBroken,
    ChannelClosed,
    ConnectionRefused,
    EndOfChannel,
    FrameTooLarge,
    IpcwireError,
    LocalProtocolError,
    MechanismUnavailable,
    RemoteProtocolError,
    Timeout,
)
from ipcwire.options import DEFAULT_CONNECT_TIMEOUT, ChannelOptions

__all__ = [
    "AioDbusChannel",
    "AioDbusListener",
    "AioDbusSubscription",
    "connect",
    "listen",
    "subscribe",
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
        async with asyncio.timeout(timeout):
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
    except Exception as exc:
        raise MechanismUnavailable(
            f"cannot reach the D-Bus daemon at {address} ({exc}); is it running? {HOW_TO_START}"
        ) from exc


async def _call(bus: MessageBus, msg: Message, timeout: float | None, url: str) -> Message:
    """A method call's reply; errors as ipcwire errors."""
    try:
        async with asyncio.timeout(timeout):
            reply = await bus.call(msg)
    except TimeoutError:
        raise Timeout(f"no reply to {msg.member} within {timeout} s", endpoint=url) from None
    except Exception as exc:
        raise ChannelBroken(f"{url}: the bus connection failed: {exc}", endpoint=url) from exc
    if reply.message_type is MessageType.ERROR:
        err = ChannelBroken(f"{msg.member} failed: {error_text(reply)}", endpoint=url)
        err.dbus_name = reply.error_name  # type: ignore[attr-defined]
        raise err
    return reply


class _Hub:
    """Routes the calls arriving on one bus connection to its channels and listener."""

    def __init__(self, bus: MessageBus, url: str, *, client: bool) -> None:
        self.bus = bus
        self.url = url
        self.client = client
        self.channels: dict[tuple[str, str], AioDbusChannel] = {}
        self.listener: AioDbusListener | None = None
        self.early: list[Message] = []
        self.opened = False
        self.users = 0
        self.error: IpcwireError | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closing: asyncio.Task[Any] | None = None
        bus.add_message_handler(self.handle)
        self.spawn(self._watch_disconnect())

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def wait_closed(self) -> None:
        """Wait (boundedly) for the hang-up, when the last user is gone."""
        if self.closing is not None:
            await asyncio.wait([self.closing], timeout=_CLOSE_TIMEOUT * 2)

    async def _watch_disconnect(self) -> None:
        try:
            await self.bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
            why = "the bus connection was closed"
        except Exception as exc:
            why = f"the D-Bus daemon closed the connection ({exc})"
        self.error = ChannelBroken(f"{self.url}: {why}", endpoint=self.url)
        for ch in list(self.channels.values()):
            ch._lost(self.error)
        if self.listener is not None:
            self.listener._wake()

    def register(self, ch: AioDbusChannel) -> None:
        self.opened = True
        self.channels[ch.key] = ch
        self.users += 1
        early, self.early = self.early, []
        for msg in early:
            self.handle(msg)

    def release(self, ch: AioDbusChannel | None = None) -> None:
        if ch is not None:
            self.channels.pop(ch.key, None)
        self.users -= 1
        if self.users <= 0 and self.closing is None:
            self.closing = self.spawn(self._disconnect())

    async def _disconnect(self) -> None:
        # A round trip to the daemon after our last message means it has routed that
        # message (a Close, say) before we hang up.
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await self.bus.call(bus_call("GetId"))
        except Exception as exc:
            log.debug(
                "ipcwire: %s: the last round trip before hanging up failed: %s", self.url, exc
            )
        self.bus.disconnect()

    def handle(self, msg: Message) -> bool | None:
        if msg.message_type is MessageType.SIGNAL:
            if msg.member == "NameOwnerChanged" and msg.sender == BUS_NAME and not msg.body[2]:
                self.peer_left(msg.body[0])
            return None
        if msg.message_type is not MessageType.METHOD_CALL or msg.interface != INTERFACE:
            return None
        if is_call(msg, "Deliver") or is_call(msg, "Close"):
            ch = self.channels.get((msg.sender, msg.body[0]))
            if ch is None and self.client and not self.opened:
                self.early.append(msg)  # the channel is being set up: hold it
                return True
            if ch is None:
                if msg.member == "Deliver":
                    self.refuse(msg, ERROR_CLOSED, "the channel is closed")
                return True
            if msg.member == "Deliver":
                ch._incoming(msg)
            else:
                ch._peer_closed()
            return True
        if is_call(msg, "Handshake") and self.listener is not None:
            self.listener._handshake(msg)
            return True
        return None

    def send(self, msg: Message) -> None:
        if self.error is not None or not self.bus.connected:
            return
        try:
            fut = self.bus.send(msg)
        except OSError:
            return  # the connection is going; _watch_disconnect reports it
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())

    def refuse(self, msg: Message, name: str, text: str) -> None:
        self.send(Message.new_error(msg, name, text))

    def peer_left(self, name: str) -> None:
        for (peer, _), ch in list(self.channels.items()):
            if peer == name:
                ch._peer_gone()
        if self.listener is not None:
            self.listener._forget(name)


class AioDbusChannel(AioChannel):
    """One ipcwire channel carried by D-Bus method calls (asyncio)."""

    def __init__(
        self,
        hub: _Hub,
        peer_name: str,
        path: str,
        chan: str,
        wire: WireFormat,
        url: str,
        peer: PeerInfo | None = None,
    ) -> None:
        self.url = url
        self.key = (peer_name, chan)
        self._loop = asyncio.get_running_loop()
        self._hub = hub
        self._dest = peer_name
        self._path = path
        self._chan = chan
        self._wire = wire
        self._encode = wire.codec.encode
        self._decode = wire.decode
        self._limit = min(wire.send_limit, MAX_MESSAGE)
        self._max_frame = wire.max_frame
        self._peer = peer or PeerInfo(address=peer_name)
        self._queue: deque[Message] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._window = asyncio.Event()
        self._window.set()
        self._inflight = 0
        self._inflight_bytes = 0
        self._send_error: IpcwireError | None = None
        self._closed = False
        self._eof = False
        self._gone: IpcwireError | None = None
        self._sent = self._received = self._bytes_sent = self._bytes_received = 0

    # -- called by the hub ------------------------------------------------------------------
    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
        self._window.set()

    def _incoming(self, msg: Message) -> None:
        if self._closed:
            self._hub.refuse(msg, ERROR_CLOSED, "the channel is closed")
            return
        self._queue.append(msg)
        self._wake()

    def _peer_closed(self) -> None:
        self._eof = True
        self._wake()

    def _peer_gone(self) -> None:
        if not self._eof:
            self._lost(
                ChannelBroken(
                    f"{self.url}: the peer's connection ({self._dest}) left the bus without "
                    f"closing the channel (it exited or crashed)",
                    endpoint=self.url,
                )
            )

    def _lost(self, err: IpcwireError) -> None:
        if self._gone is None:
            self._gone = err
        self._wake()

    def _acked(self, task: asyncio.Task[Message], size: int) -> None:
        self._inflight -= 1
        self._inflight_bytes -= size
        if self._send_error is None:
            if task.cancelled():
                pass
            elif (exc := task.exception()) is not None:
                self._send_error = ChannelBroken(f"{self.url}: {exc}", endpoint=self.url)
            elif task.result().message_type is MessageType.ERROR:
                reply = task.result()
                why = (
                    "the peer closed the channel"
                    if reply.error_name == ERROR_CLOSED
                    else error_text(reply)
                )
                self._send_error = ChannelBroken(
                    f"a message to {self.url} was not delivered: {why}", endpoint=self.url
                )
        self._window.set()

    # -- sending ----------------------------------------------------------------------------
    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        data = self._encode(obj)
        payload = data if type(data) is bytes else bytes(data)
        size = len(payload)
        if size > self._limit:
            raise FrameTooLarge(
                f"message of {size} bytes not sent to {self.url}: over the limit of "
                f"{self._limit} bytes; raise max_frame= on both sides",
                size=size,
                limit=self._limit,
                endpoint=self.url,
            )
        deadline = None if timeout is None else self._loop.time() + timeout
        while True:
            self._check_send()
            if not self._inflight or (
                self._inflight < WINDOW and self._inflight_bytes + size <= WINDOW_BYTES
            ):
                break
            self._window.clear()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._window.wait()
            except TimeoutError:
                raise Timeout(
                    f"send to {self.url} timed out after {timeout} s: the peer is not taking "
                    f"messages ({self._inflight} unacknowledged); nothing was sent",
                    endpoint=self.url,
                ) from None
        self._inflight += 1
        self._inflight_bytes += size
        msg = deliver_call(self._dest, self._path, self._chan, payload)
        task = self._loop.create_task(self._hub.bus.call(msg))
        task.add_done_callback(lambda t: self._acked(t, size))
        self._sent += 1
        self._bytes_sent += size

    def _check_send(self) -> None:
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        if self._send_error is not None:
            raise self._send_error
        if self._eof:
            raise ChannelBroken(
                f"cannot send to {self.url}: the peer closed its end", endpoint=self.url
            )
        if self._gone is not None:
            raise self._gone

    # -- receiving --------------------------------------------------------------------------
    async def recv(self, *, timeout: float | None = None) -> Any:
        msg = await self._take(timeout)
        self._hub.send(Message.new_method_return(msg))  # the acknowledgement
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

    async def _take(self, timeout: float | None) -> Message:
        deadline = None if timeout is None else self._loop.time() + timeout
        while True:
            if self._closed:
                raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
            if self._queue:
                return self._queue.popleft()
            if self._eof:
                raise EndOfChannel(f"{self.url} closed its end", endpoint=self.url)
            if self._gone is not None:
                raise self._gone
            if timeout == 0:
                raise Timeout(f"no message from {self.url} yet", endpoint=self.url)
            if self._waiter is not None:
                raise LocalProtocolError(
                    f"another task is already receiving on {self.url}; receive from one task"
                )
            fut = self._waiter = self._loop.create_future()
            try:
                async with asyncio.timeout_at(deadline):
                    await fut
            except TimeoutError:
                raise Timeout(
                    f"no message from {self.url} within {timeout} s", endpoint=self.url
                ) from None
            finally:
                self._waiter = None

    # -- the rest ---------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        unread = list(self._queue)
        self._queue.clear()
        self._wake()
        for msg in unread:
            self._hub.refuse(msg, ERROR_CLOSED, "the channel was closed before reading this")
        if not self._eof and self._gone is None:
            self._hub.send(close_call(self._dest, self._path, self._chan))
        self._hub.release(self)

    async def aclose(self) -> None:
        self.close()
        await self._hub.wait_closed()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def peer(self) -> PeerInfo | None:
        return self._peer

    @property
    def wire(self) -> WireFormat:
        """The codec in use."""
        return self._wire

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            messages_sent=self._sent,
            messages_received=self._received,
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
            buffered_bytes=sum(len(m.body[1]) for m in self._queue),
        )


async def _credentials(bus: MessageBus, name: str, url: str) -> PeerInfo:
    try:
        reply = await _call(bus, bus_call("GetConnectionCredentials", "s", [name]), 10.0, url)
    except IpcwireError:
        return PeerInfo(address=name)
    return peer_from_credentials(reply.body[0], name)


async def connect(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    timeout: float | None = None,
    reconnect: float | None = None,
    **kw: Any,
) -> AioDbusChannel:
    """Open a channel to the listener owning the URL's bus name (asyncio)."""
    address = _options(endpoint, kw, ("timeout", "reconnect"))
    target = parse_target(endpoint)
    url = endpoint.url
    limit = timeout if timeout is not None else DEFAULT_CONNECT_TIMEOUT
    loop = asyncio.get_running_loop()
    start = loop.time()
    bus = await _open_bus(bus_address(target, address), url, limit)
    try:
        owner = await _find_owner(bus, target, url, reconnect, start, limit)
        hub = _Hub(bus, url, client=True)
        await _call(bus, bus_call("AddMatch", "s", [owner_changed_rule(owner)]), limit, url)
        hs, _ = handshakes(options)
        text, chan = _strip(hs.hello()), ""
        while True:
            try:
                reply = await _call(bus, handshake_call(owner, target.path, chan, text), limit, url)
            except ChannelBroken as exc:
                if getattr(exc, "dbus_name", None) == ERROR_REFUSED:
                    raise ConnectionRefused(f"{url}: {exc}", endpoint=url) from None
                raise RemoteProtocolError(
                    f"{target.describe()} at {target.path} is not an ipcwire listener ({exc})",
                    endpoint=url,
                ) from None
            chan, answer = reply.body
            step = hs.receive(answer.encode())
            if step.done:
                break
            text = _strip(step.send)
        peer = await _credentials(bus, owner, url)
    except BaseException:
        bus.disconnect()
        raise
    wire = options.wire()
    wire.send_limit = hs.peer_max_frame
    ch = AioDbusChannel(hub, owner, target.path, chan, wire, url, peer)
    hub.register(ch)
    return ch


async def _find_owner(
    bus: MessageBus, target: Target, url: str, reconnect: float | None, start: float, limit: float
) -> str:
    loop = asyncio.get_running_loop()
    delays = backoff_delays()
    while True:
        reply = await bus.call(bus_call("GetNameOwner", "s", [target.name]))
        if reply.message_type is MessageType.METHOD_RETURN:
            owner: str = reply.body[0]
            return owner
        if reply.error_name != "org.freedesktop.DBus.Error.NameHasNoOwner":
            raise ChannelBroken(f"{url}: {error_text(reply)}", endpoint=url)
        left = start + (reconnect or 0) - loop.time()
        if left <= 0:
            raise ConnectionRefused(
                f"nothing is listening at {url}: no connection owns {target.describe()}. "
                f"Start the listener first, or pass reconnect=SECONDS to keep trying",
                endpoint=url,
            )
        await asyncio.sleep(min(next(delays), left))


class AioDbusListener(AioListener):
    """Owns a bus name and accepts channels (asyncio); :meth:`publish` emits signals."""

    def __init__(self, hub: _Hub, target: Target, options: ChannelOptions, url: str) -> None:
        self.url = url
        self._hub = hub
        self._target = target
        self._options = options
        self._ready: asyncio.Queue[AioDbusChannel | None] = asyncio.Queue()
        self._pending: dict[tuple[str, str], tuple[ServerHandshake, float]] = {}
        self._watched: set[str] = set()
        self._ids = itertools.count(1)
        self._closed = False
        self._loop = asyncio.get_running_loop()
        hub.users += 1
        hub.listener = self

    @property
    def closed(self) -> bool:
        return self._closed

    def publish(self, obj: Any, *, topic: str = "") -> None:
        """Emit ``obj`` as an ``Event`` signal to every subscriber (of ``topic``).

        Raises:
            ChannelClosed: the listener is closed.
        """
        if self._closed:
            raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
        data = self._options.codec.encode(obj)
        self._hub.send(event_signal(self._target.path, topic, bytes(data)))

    def _wake(self) -> None:
        self._ready.put_nowait(None)

    def _handshake(self, msg: Message) -> None:
        sender: str = msg.sender
        chan, text = msg.body
        if self._closed:
            self._hub.refuse(msg, ERROR_REFUSED, "the listener is closed")
            return
        now = self._loop.time()
        for key in [k for k, (_, dl) in self._pending.items() if dl < now]:
            del self._pending[key]
        if not chan:
            chan = f"c{next(self._ids)}"
            hs_new = handshakes(self._options)[1]
            self._pending[(sender, chan)] = (hs_new, now + self._options.handshake_timeout)
            self._watch(sender)
        entry = self._pending.get((sender, chan))
        if entry is None:
            self._hub.refuse(msg, ERROR_REFUSED, "unknown or expired handshake")
            return
        hs = entry[0]
        step = hs.receive(text.encode())
        if step.error is not None or step.done:
            del self._pending[(sender, chan)]
        if step.error is not None:
            log.warning("ipcwire: %s refused %s: %s", self.url, sender, step.error)
        elif step.done:
            wire = self._options.wire()
            wire.send_limit = hs.peer_max_frame
            ch = AioDbusChannel(self._hub, sender, CLIENT_PATH, chan, wire, self.url)
            self._hub.register(ch)
            self._hub.spawn(self._announce(ch))
        self._hub.send(Message.new_method_return(msg, "ss", [chan, _strip(step.send)]))

    async def _announce(self, ch: AioDbusChannel) -> None:
        ch._peer = await _credentials(self._hub.bus, ch._dest, self.url)
        if self._closed:
            ch.close()
        else:
            self._ready.put_nowait(ch)

    def _watch(self, sender: str) -> None:
        if sender in self._watched:
            return
        self._watched.add(sender)
        self._hub.send(bus_call("AddMatch", "s", [owner_changed_rule(sender)]))

        async def check() -> None:
            reply = await self._hub.bus.call(bus_call("NameHasOwner", "s", [sender]))
            if reply.message_type is MessageType.METHOD_RETURN and not reply.body[0]:
                self._hub.peer_left(sender)

        self._hub.spawn(check())

    def _forget(self, name: str) -> None:
        for key in [k for k in self._pending if k[0] == name]:
            del self._pending[key]
        if name in self._watched:
            self._watched.discard(name)
            self._hub.send(bus_call("RemoveMatch", "s", [owner_changed_rule(name)]))

    async def accept(self, *, timeout: float | None = None) -> AioChannel:
        while True:
            if self._closed:
                raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
            if self._hub.error is not None:
                raise ChannelBroken(f"listener {self.url}: {self._hub.error}", endpoint=self.url)
            try:
                async with asyncio.timeout(timeout):
                    ch = await self._ready.get()
            except TimeoutError:
                raise Timeout(
                    f"no client connected to {self.url} within {timeout} s", endpoint=self.url
                ) from None
            if ch is not None:
                return ch

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        while not self._ready.empty():
            ch = self._ready.get_nowait()
            if ch is not None:
                ch.close()
        self._ready.put_nowait(None)
        self._hub.send(bus_call("ReleaseName", "s", [self._target.name]))
        self._hub.listener = None
        self._hub.release()

    async def aclose(self) -> None:
        self.close()
        await self._hub.wait_closed()


async def listen(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    timeout: float | None = None,
    **kw: Any,
) -> AioDbusListener:
    """Own the URL's bus name and serve ipcwire channels there (asyncio).

    Raises:
        AddressInUse: another connection owns the name (its pid is named).
        MechanismUnavailable: no bus, with how to start one.
    """
    kw.pop("backlog", None)
    address = _options(endpoint, kw, ("timeout", "backlog"))
    target = parse_target(endpoint)
    url = endpoint.url
    limit = timeout if timeout is not None else DEFAULT_CONNECT_TIMEOUT
    bus = await _open_bus(bus_address(target, address), url, limit)
    try:
        hub = _Hub(bus, url, client=False)
        listener = AioDbusListener(hub, target, options, url)
        reply = await _call(bus, bus_call("RequestName", "su", [target.name, 4]), limit, url)
        if reply.body[0] not in (1, 4):
            pid = None
            owner = await bus.call(bus_call("GetNameOwner", "s", [target.name]))
            if owner.message_type is MessageType.METHOD_RETURN:
                pid = (await _credentials(bus, owner.body[0], url)).pid
            from ipcwire._procfs import describe_pid

            who = describe_pid(pid) if pid else "another connection"
            raise AddressInUse(
                f"{url} is in use: {who} owns {target.describe()}; stop it, or pick another name",
                pid=pid,
                endpoint=url,
            )
    except BaseException:
        bus.disconnect()
        raise
    return listener


class AioDbusSubscription(AioChannel):
    """Receives a listener's ``Event`` signals (asyncio); sending is refused."""

    def __init__(self, bus: MessageBus, target: Target, wire: WireFormat, url: str) -> None:
        self.url = url
        self._bus = bus
        self._target = target
        self._decode = wire.decode
        self._queue: deque[tuple[str, bytes]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._received = self._bytes_received = 0
        self._handler: Callable[[Message], None] = self._signal
        bus.add_message_handler(self._handler)

    def _signal(self, msg: Message) -> None:
        if (
            msg.message_type is MessageType.SIGNAL
            and msg.interface == INTERFACE
            and msg.member == "Event"
            and msg.path == self._target.path
        ):
            self._queue.append((msg.body[0], msg.body[1]))
            w = self._waiter
            if w is not None and not w.done():
                w.set_result(None)

    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        raise LocalProtocolError(
            f"{self.url} is a subscription: it only receives; publish with the listener's publish()"
        )

    async def recv(self, *, timeout: float | None = None) -> Any:
        return (await self.recv_event(timeout=timeout))[1]

    async def recv_event(self, *, timeout: float | None = None) -> tuple[str, Any]:
        """The next event as ``(topic, message)``.

        Raises:
            Timeout, ChannelClosed.
        """
        while not self._queue:
            if self._closed:
                raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
            if timeout == 0:
                raise Timeout(f"no event from {self.url} yet", endpoint=self.url)
            fut = self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await fut
            except TimeoutError:
                raise Timeout(f"no event from {self.url} within {timeout} s") from None
            finally:
                self._waiter = None
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        topic, payload = self._queue.popleft()
        self._received += 1
        self._bytes_received += len(payload)
        return topic, self._decode(memoryview(payload))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
        self._bus.disconnect()

    async def aclose(self) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            messages_sent=0,
            messages_received=self._received,
            bytes_sent=0,
            bytes_received=self._bytes_received,
        )


async def subscribe(
    url: str,
    *,
    topic: str | None = None,
    codec: str | None = None,
    address: str | None = None,
    timeout: float | None = None,
) -> AioDbusSubscription:
    """Subscribe to the ``Event`` signals of the listener at ``url`` (asyncio)."""
    endpoint = parse_url(url)
    options = ChannelOptions.build(endpoint, {} if codec is None else {"codec": codec})
    target = parse_target(endpoint)
    limit = timeout if timeout is not None else DEFAULT_CONNECT_TIMEOUT
    bus = await _open_bus(bus_address(target, address), url, limit)
    try:
        sub = AioDbusSubscription(bus, target, options.wire(), url)
        await _call(bus, bus_call("AddMatch", "s", [event_rule(target, topic)]), limit, url)
    except BaseException:
        bus.disconnect()
        raise
    return sub

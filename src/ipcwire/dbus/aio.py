"""D-Bus, asyncio driver: dbus-fast's native asyncio ``MessageBus`` (no threads).

Same protocol and behaviour as the blocking driver (``_proto.py``; the state both keep is in
``_state.py``, ``_listener_state.py`` and ``_subscription_state.py``, this module adds the
waiting): one bus connection per client channel; a listener's channels share its connection,
routed by a message handler. Opening and calling a bus connection, and the hub routing its
calls, are in ``_aio_conn.py``.

``close()`` from another thread than the running loop's hands the close to the loop
(``call_soon_threadsafe``): the futures a ``recv`` or ``accept`` waits on, the hang-up task
and dbus-fast's writer belong to the loop. (Done in the calling thread, the close raised
"no running event loop", left the bus connection open, and a waiting ``recv`` slept on
until its timeout.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from ipcwire._core.url import Endpoint
from ipcwire._core.wire import WireFormat
from ipcwire._stream.retry import backoff_delays
from ipcwire.aio._timeouts import within, within_at
from ipcwire.aio._without_loop import handed_to_loop
from ipcwire.aio.channel import AioChannel, AioListener
from ipcwire.channel import PeerInfo
from ipcwire.dbus._aio_conn import (
    _CLOSE_TIMEOUT,
    _call,
    _credentials,
    _Hub,
    _open_bus,
    _retrieve_write_error,
    _when_disconnected,
)
from ipcwire.dbus._listener_state import PUBLISH_TIMEOUT, ListenerState
from ipcwire.dbus._proto import (
    CLIENT_PATH,
    NAME_HAS_NO_OWNER,
    ClientHandshakeCalls,
    DbusError,
    Target,
    bus_call,
    deliver_call,
    event_rule,
    handshake_failed,
    is_event,
    name_refused,
    name_taken,
    nobody_listening,
    owner_changed_rule,
    owns_name,
    peers_left_rule,
    request_name,
    resolve,
    resolve_subscription,
    window,
)
from ipcwire.dbus._state import ChannelState, daemon_closed
from ipcwire.dbus._subscription_state import SubscriptionState
from ipcwire.errors import (
    ChannelBroken,
    ChannelClosed,
    IpcwireError,
    LocalProtocolError,
    Timeout,
)
from ipcwire.options import ChannelOptions

__all__ = [
    "AioDbusChannel",
    "AioDbusListener",
    "AioDbusSubscription",
    "connect",
    "listen",
    "subscribe",
]


class AioDbusChannel(ChannelState, AioChannel):
    """One ipcwire channel carried by D-Bus method calls (asyncio)."""

    _hub: _Hub

    def __init__(
        self,
        hub: _Hub,
        peer_name: str,
        path: str,
        chan: str,
        wire: WireFormat,
        url: str,
        peer: PeerInfo | None = None,
        *,
        fails: bool = False,
    ) -> None:
        super().__init__(hub, peer_name, path, chan, wire, url, peer, fails=fails)
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        self._window = asyncio.Event()
        self._window.set()

    # -- called by the hub ------------------------------------------------------------------
    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
        self._window.set()

    def _incoming(self, msg: Message) -> None:
        refusal = self._enqueue(msg)
        if refusal is None:
            self._wake()
        else:
            self._hub.refuse(msg, *refusal)

    def _peer_closed(self) -> None:
        self._eof = True
        self._wake()

    def _lost(self, err: IpcwireError) -> None:
        if self._gone is None:
            self._gone = err
        self._wake()

    def _room(self) -> None:
        self._window.set()

    def _acked(self, task: asyncio.Task[Message], size: int) -> None:
        if task.cancelled():
            self._settled(size, None, None)
        elif (exc := task.exception()) is not None:  # the connection failed (the blocking words)
            self._settled(size, ChannelBroken(daemon_closed(exc), endpoint=self.url), None)
        else:
            self._settled(size, None, task.result())
        self._window.set()
        self._hub.free_slot()

    # -- sending ----------------------------------------------------------------------------
    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        payload = self._payload(obj)
        size = len(payload)
        deadline = None if timeout is None else self._loop.time() + timeout
        while not self._may_send(size):
            self._window.clear()
            try:
                async with within_at(deadline):
                    await self._window.wait()
            except TimeoutError:
                raise Timeout(self._window_full(timeout), endpoint=self.url) from None
        if not self._hub.bus.connected:  # ended, not yet reported: no write on a closed socket
            self._hub.free_slot()
            raise self._hub.error or ChannelBroken(
                f"{self.url}: the bus connection ended", endpoint=self.url
            )
        self._inflight += 1
        self._inflight_bytes += size
        msg = deliver_call(self._dest, self._path, self._chan, payload)
        task = self._loop.create_task(self._hub.bus.call(msg))
        task.add_done_callback(lambda t: self._acked(t, size))
        self._sent += 1
        self._bytes_sent += size

    # -- receiving --------------------------------------------------------------------------
    async def recv(self, *, timeout: float | None = None) -> Any:
        msg = await self._take(timeout)
        self._hub.send(Message.new_method_return(msg))  # the acknowledgement
        return self._unpack(msg)

    async def _take(self, timeout: float | None) -> Message:
        deadline = None if timeout is None else self._loop.time() + timeout
        while (msg := self._next()) is None:
            if timeout == 0:
                raise Timeout(f"no message from {self.url} yet", endpoint=self.url)
            if self._waiter is not None:
                raise LocalProtocolError(
                    f"another task is already receiving on {self.url}; receive from one task"
                )
            fut = self._waiter = self._loop.create_future()
            try:
                async with within_at(deadline):
                    await fut
            except TimeoutError:
                raise Timeout(
                    f"no message from {self.url} within {timeout} s", endpoint=self.url
                ) from None
            finally:
                self._waiter = None
        return msg

    # -- the rest ---------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        if handed_to_loop(self._loop, self.close):  # another thread (module docstring)
            return
        unread = self._shut()
        self._wake()
        self._say_closed(unread)

    async def aclose(self) -> None:
        self.close()
        await self._hub.wait_closed()

    async def _aclose_after(self, exc: BaseException | None) -> None:
        self._failing(exc)  # an async with block or serve() handler that raised: Fail
        await self.aclose()


async def connect(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    timeout: float | None = None,
    reconnect: float | None = None,
    **kw: Any,
) -> AioDbusChannel:
    """Open a channel to the listener owning the URL's bus name (asyncio)."""
    target, address, limit = resolve(endpoint, kw, timeout, ("timeout", "reconnect"))
    url = endpoint.url
    start = asyncio.get_running_loop().time()
    bus = await _open_bus(address, url, limit)
    try:
        owner = await _find_owner(bus, target, url, reconnect, start, limit)
        hub = _Hub(bus, url, client=True, window=window(target))
        await _call(bus, bus_call("AddMatch", "s", [owner_changed_rule(owner)]), limit, url)
        calls = ClientHandshakeCalls(options, owner, target.path)
        while (call := calls.next_call()) is not None:
            try:
                reply = await _call(bus, call, limit, url)
            except DbusError as exc:
                raise handshake_failed(url, target, exc) from None
            calls.answered(reply)
        peer = await _credentials(bus, owner, url)
    except BaseException:
        bus.disconnect()
        raise
    wire = options.wire()
    wire.send_limit = calls.peer_max_frame
    ch = AioDbusChannel(hub, owner, target.path, calls.chan, wire, url, peer, fails=calls.fails)
    hub.register(ch)
    return ch


async def _find_owner(
    bus: MessageBus, target: Target, url: str, reconnect: float | None, start: float, limit: float
) -> str:
    loop = asyncio.get_running_loop()
    delays = backoff_delays()
    while True:
        try:
            reply = await _call(bus, bus_call("GetNameOwner", "s", [target.name]), limit, url)
            owner: str = reply.body[0]
            return owner
        except DbusError as exc:
            if exc.name != NAME_HAS_NO_OWNER:
                raise
            left = start + (reconnect or 0) - loop.time()
            if left <= 0:
                raise nobody_listening(url, target) from None
            await asyncio.sleep(min(next(delays), left))


class AioDbusListener(ListenerState, AioListener):
    """Owns a bus name and accepts channels (asyncio); :meth:`publish` emits signals."""

    _hub: _Hub

    def __init__(self, hub: _Hub, target: Target, options: ChannelOptions, url: str) -> None:
        super().__init__(hub, target, options, url, options.handshake_timeout)
        self._ready: asyncio.Queue[AioDbusChannel | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()

    async def publish(
        self, obj: Any, *, topic: str = "", timeout: float | None = PUBLISH_TIMEOUT
    ) -> None:
        """Emit ``obj`` as an ``Event`` signal to every subscriber (of ``topic``).

        It waits until the bus daemon's socket has taken the event, at most ``timeout``
        seconds (None: no limit), so a daemon that stops reading holds the publisher up
        rather than have events pile up in memory; subscribers never hold it up.

        Raises:
            ChannelClosed: the listener is closed (also when closed meanwhile).
            FrameTooLarge: over what a bus carries (``MAX_MESSAGE``).
            Timeout: the daemon did not take the event in time: nothing was sent (or, after
                part of it, the listener's bus connection was cut: ``ChannelBroken`` from
                then on).
            ChannelBroken: the bus connection is gone.
        """
        msg = self._event(obj, topic)
        try:
            await self._hub.write(msg, timeout)
        except IpcwireError as exc:
            raise self._not_published(exc) from exc
        if self._closed:  # closed while this waited: the hang-up may have cut the event
            raise self._not_published(ChannelClosed(f"{self.url} is closed", endpoint=self.url))

    def _now(self) -> float:
        return self._loop.time()

    def _wake(self) -> None:
        self._ready.put_nowait(None)

    def _open(self, sender: str, chan: str, wire: WireFormat, fails: bool) -> None:
        ch = AioDbusChannel(self._hub, sender, CLIENT_PATH, chan, wire, self.url, fails=fails)
        self._hub.register(ch)
        self._hub.spawn(self._announce(ch))

    async def _announce(self, ch: AioDbusChannel) -> None:
        ch._peer = await _credentials(self._hub.bus, ch._dest, self.url)
        if self._closed:
            ch.close()
        else:
            self._ready.put_nowait(ch)

    def _watch(self, sender: str) -> None:
        if sender in self._watched:
            return
        self._watched.add(sender)  # peers_left_rule() (since listen()) tells when it leaves

        async def check() -> None:
            reply = await self._hub.bus.call(bus_call("NameHasOwner", "s", [sender]))
            if reply.message_type is MessageType.METHOD_RETURN and not reply.body[0]:
                self._hub.peer_left(sender)

        self._hub.spawn(check())

    async def accept(self, *, timeout: float | None = None) -> AioChannel:
        while True:
            if self._closed:
                raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
            if self._hub.error is not None:
                raise self._hub.error
            try:
                async with within(timeout):
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
        if handed_to_loop(self._loop, self.close):  # another thread (module docstring)
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
        PermissionDenied: the bus's policy does not let this process own the name.
        MechanismUnavailable: no bus, with how to start one.
    """
    kw.pop("backlog", None)
    target, address, limit = resolve(endpoint, kw, timeout, ("timeout", "backlog"))
    url = endpoint.url
    bus = await _open_bus(address, url, limit)
    try:
        hub = _Hub(bus, url, client=False, window=window(target))
        listener = AioDbusListener(hub, target, options, url)
        try:
            reply = await _call(bus, request_name(target.name), limit, url)
        except DbusError as exc:
            raise name_refused(url, target, exc) from None
        if not owns_name(reply):
            pid = None
            owner = await bus.call(bus_call("GetNameOwner", "s", [target.name]))
            if owner.message_type is MessageType.METHOD_RETURN:
                pid = (await _credentials(bus, owner.body[0], url)).pid
            raise name_taken(url, target, pid)
        await _call(bus, bus_call("AddMatch", "s", [peers_left_rule()]), limit, url)
    except BaseException:
        bus.disconnect()
        raise
    return listener


class AioDbusSubscription(SubscriptionState, AioChannel):
    """Receives a listener's ``Event`` signals (asyncio); sending is refused."""

    def __init__(self, bus: MessageBus, target: Target, wire: WireFormat, url: str) -> None:
        super().__init__(target, wire, url)
        self._bus = bus
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        self._handler: Callable[[Message], None] = self._signal
        bus.add_message_handler(self._handler)
        self._disconnected = _when_disconnected(bus, self._ended)

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _signal(self, msg: Message) -> None:
        if is_event(msg, self._target.path):
            if not self._keep(msg.body[0], msg.body[1]):
                self._bus.disconnect()
            self._wake()

    def _ended(self, exc: BaseException | None) -> None:
        _retrieve_write_error(self._bus)
        if self._gone is None:
            if exc is not None:
                self._gone = self._bus_gone(daemon_closed(exc), exc)
            else:
                self._gone = self._bus_gone("the bus connection was closed", None)
        self._wake()

    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        raise self._only_receives()

    async def recv(self, *, timeout: float | None = None) -> Any:
        return (await self.recv_event(timeout=timeout))[1]

    async def recv_event(self, *, timeout: float | None = None) -> tuple[str, Any]:
        """The next event as ``(topic, message)``.

        Raises:
            Timeout, ChannelClosed, ChannelBroken (the bus connection ended),
            FrameTooLarge (over max_frame: skipped),
            LocalProtocolError (another task is receiving).
        """
        while (event := self._next()) is None:
            if timeout == 0:
                raise Timeout(self._no_event(timeout), endpoint=self.url)
            if self._waiter is not None:
                raise LocalProtocolError(
                    f"another task is already receiving on {self.url}; receive from one task"
                )
            fut = self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with within(timeout):
                    await fut
            except TimeoutError:
                raise Timeout(self._no_event(timeout), endpoint=self.url) from None
            finally:
                self._waiter = None
        return self._taken(*event)

    def close(self) -> None:
        if self._closed:
            return
        if handed_to_loop(self._loop, self.close):  # another thread (module docstring)
            return
        self._closed = True
        self._wake()
        self._bus.disconnect()

    async def aclose(self) -> None:
        """Close, and wait (boundedly) for the connection to end (its socket closed)."""
        self.close()
        await asyncio.wait([self._disconnected], timeout=_CLOSE_TIMEOUT)


async def subscribe(
    url: str,
    *,
    topic: str | None = None,
    codec: str | None = None,
    address: str | None = None,
    timeout: float | None = None,
) -> AioDbusSubscription:
    """Subscribe to the ``Event`` signals of the listener at ``url`` (asyncio)."""
    target, options, address, limit = resolve_subscription(url, codec, address, timeout)
    bus = await _open_bus(address, url, limit)
    try:
        sub = AioDbusSubscription(bus, target, options.wire(), url)
        await _call(bus, bus_call("AddMatch", "s", [event_rule(target, topic, url)]), limit, url)
    except BaseException:
        bus.disconnect()
        raise
    return sub

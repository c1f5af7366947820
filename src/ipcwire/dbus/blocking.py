"""D-Bus, blocking driver (the protocol is in ``_proto.py``, the state both drivers keep in
``_state.py``, ``_listener_state.py`` and ``_subscription_state.py``).

Each client channel has its own bus connection; a listener's channels share the listener's
connection, whose reader thread routes every incoming call to its channel.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from dbus_fast import Message, MessageType

from ipcwire._core.url import Endpoint
from ipcwire._core.wire import WireFormat
from ipcwire._deadline import seconds_left
from ipcwire._stream.retry import backoff_delays
from ipcwire.channel import Channel, Listener, PeerInfo
from ipcwire.dbus._conn import SEND_TIMEOUT, BusConnection
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
    peer_from_credentials,
    peers_left_rule,
    request_name,
    resolve,
    resolve_subscription,
    window,
)
from ipcwire.dbus._state import ChannelState, HubState
from ipcwire.dbus._subscription_state import SubscriptionState
from ipcwire.errors import ChannelClosed, IpcwireError, Timeout
from ipcwire.options import ChannelOptions

__all__ = ["DbusChannel", "DbusListener", "DbusSubscription", "connect", "listen", "subscribe"]

log = logging.getLogger("ipcwire")


class _Hub(HubState):
    """Routes the calls arriving on one connection (in its reader thread)."""

    def __init__(
        self, conn: BusConnection, *, client: bool, window: tuple[int, int | None]
    ) -> None:
        super().__init__(client=client, lock=threading.Lock(), window=window)
        self.conn = conn
        conn.add_handler(self.handle)
        conn.on_lost(lambda err: self.lost(conn.label, str(err), err))

    def handle(self, msg: Message) -> None:
        if self.route(msg) or msg.message_type is not MessageType.METHOD_CALL:
            return
        if msg.interface == "org.freedesktop.DBus.Peer" and msg.member == "Ping":
            self.send(Message.new_method_return(msg))
        elif not msg.flags & 1:
            self.refuse(msg, "org.freedesktop.DBus.Error.UnknownMethod", "not an ipcwire call")

    def send(self, msg: Message) -> None:
        try:
            self.conn.send(msg, timeout=SEND_TIMEOUT)
        except Timeout:  # an acknowledgement, a refusal or a Close that could not go
            self.conn.cut_off(f"the D-Bus daemon did not read a message for {SEND_TIMEOUT} s")
        except IpcwireError:
            pass

    def _unused(self) -> None:
        self.conn.close()


class DbusChannel(ChannelState, Channel):
    """One ipcwire channel carried by D-Bus method calls."""

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
        self._conn = hub.conn
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()

    # -- called by the hub (reader thread) --------------------------------------------------
    def _incoming(self, msg: Message) -> None:
        with self._cond:
            refusal = self._enqueue(msg)
            if refusal is None:
                self._cond.notify_all()
        if refusal is not None:
            self._hub.refuse(msg, *refusal)

    def _peer_closed(self) -> None:
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _lost(self, err: IpcwireError) -> None:
        with self._cond:
            if self._gone is None:
                self._gone = err
            self._cond.notify_all()

    def _room(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _acked(self, reply: Message | None, err: IpcwireError | None, size: int) -> None:
        with self._cond:
            self._settled(size, err, reply)
            self._cond.notify_all()
        self._hub.free_slot()

    # -- sending ----------------------------------------------------------------------------
    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        payload = self._payload(obj)
        size = len(payload)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._send_lock:
            with self._cond:
                while not self._may_send(size):
                    self._cond.wait(seconds_left(deadline, self._window_full(timeout), self.url))
                self._inflight += 1
                self._inflight_bytes += size
            try:
                msg = deliver_call(self._dest, self._path, self._chan, payload)
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                self._conn.send(msg, lambda r, e: self._acked(r, e, size), timeout=left)
            except IpcwireError:
                with self._cond:
                    self._inflight -= 1
                    self._inflight_bytes -= size
                self._hub.free_slot()
                raise
        self._sent += 1
        self._bytes_sent += size

    # -- receiving --------------------------------------------------------------------------
    def recv(self, *, timeout: float | None = None) -> Any:
        msg = self._take(timeout)
        self._hub.send(Message.new_method_return(msg))  # the acknowledgement
        return self._unpack(msg)

    def _take(self, timeout: float | None) -> Message:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while (msg := self._next()) is None:
                self._cond.wait(
                    seconds_left(
                        deadline,
                        f"no message from {self.url} within {timeout} s"
                        if timeout
                        else f"no message from {self.url} yet",
                        self.url,
                    )
                )
            return msg

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            unread = self._shut()
            self._cond.notify_all()
        self._say_closed(unread)

    def _close_after(self, exc: BaseException | None) -> None:
        self._failing(exc)  # a with block or serve() handler that raised: Fail, not Close
        self.close()


def credentials(conn: BusConnection, name: str, timeout: float) -> PeerInfo:
    """The peer's pid and uid as the bus daemon saw them (from the kernel)."""
    try:
        reply = conn.call(bus_call("GetConnectionCredentials", "s", [name]), timeout=timeout)
    except IpcwireError:
        return PeerInfo(address=name)
    return peer_from_credentials(reply.body[0], name)


def connect(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    timeout: float | None = None,
    reconnect: float | None = None,
    **kw: Any,
) -> DbusChannel:
    """Open a channel to the listener owning the URL's bus name; see :func:`ipcwire.connect`.

    ``address=`` picks a bus by address instead of the environment.
    """
    target, address, limit = resolve(endpoint, kw, timeout, ("timeout", "reconnect"))
    start = time.monotonic()
    conn = BusConnection(address, timeout=limit, label=endpoint.url)
    try:
        owner = _find_owner(conn, target, endpoint.url, reconnect, start, limit)
        hub = _Hub(conn, client=True, window=window(target))
        conn.add_match(owner_changed_rule(owner))
        chan, peer_max, fails = _client_handshake(conn, owner, target, options, limit)
        peer = credentials(conn, owner, limit)
    except BaseException:
        conn.close()
        raise
    wire = options.wire()
    wire.send_limit = peer_max
    ch = DbusChannel(hub, owner, target.path, chan, wire, endpoint.url, peer, fails=fails)
    hub.register(ch)
    return ch


def _find_owner(
    conn: BusConnection,
    target: Target,
    url: str,
    reconnect: float | None,
    start: float,
    limit: float,
) -> str:
    delays = backoff_delays()
    while True:
        try:
            owner: str = conn.call(
                bus_call("GetNameOwner", "s", [target.name]), timeout=limit
            ).body[0]
            return owner
        except DbusError as exc:
            if exc.name != NAME_HAS_NO_OWNER:
                raise
            left = start + (reconnect or 0) - time.monotonic()
            if left <= 0:
                raise nobody_listening(url, target) from None
            time.sleep(min(next(delays), left))


def _client_handshake(
    conn: BusConnection, owner: str, target: Target, options: ChannelOptions, limit: float
) -> tuple[str, int, bool]:
    """The channel's name, the listener's max_frame, and whether it takes ``Fail``."""
    calls = ClientHandshakeCalls(options, owner, target.path)
    while (call := calls.next_call()) is not None:
        try:
            reply = conn.call(call, timeout=limit)
        except DbusError as exc:
            raise handshake_failed(options.url, target, exc) from None
        calls.answered(reply)
    return calls.chan, calls.peer_max_frame, calls.fails


class DbusListener(ListenerState, Listener):
    """Owns a bus name and accepts channels; :meth:`publish` emits signals."""

    _hub: _Hub

    def __init__(
        self, hub: _Hub, target: Target, options: ChannelOptions, url: str, timeout: float
    ) -> None:
        super().__init__(hub, target, options, url, timeout)
        self._conn = hub.conn
        self._cond = threading.Condition()
        self._ready: deque[DbusChannel] = deque()

    @property
    def unique_name(self) -> str:
        """This listener's connection name on the bus."""
        return self._conn.unique_name

    def publish(
        self, obj: Any, *, topic: str = "", timeout: float | None = PUBLISH_TIMEOUT
    ) -> None:
        """Emit ``obj`` as an ``Event`` signal to every subscriber (of ``topic``).

        It waits until the bus daemon has taken the event, at most ``timeout`` seconds (None:
        no limit); subscribers never hold it up, only a daemon that stopped reading.

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
            self._conn.send(msg, timeout=timeout)
        except IpcwireError as exc:
            raise self._not_published(exc) from exc

    # -- called by the hub (reader thread) --------------------------------------------------
    def _now(self) -> float:
        return time.monotonic()

    def _open(self, sender: str, chan: str, wire: WireFormat, fails: bool) -> None:
        ch = DbusChannel(self._hub, sender, CLIENT_PATH, chan, wire, self.url, fails=fails)
        self._hub.register(ch)
        # accept() hands the channel out once the bus said who the peer is
        self._conn.send(
            bus_call("GetConnectionCredentials", "s", [sender]),
            lambda r, e: self._credentials(ch, r),
        )

    def _credentials(self, ch: DbusChannel, reply: Message | None) -> None:
        if reply is not None and reply.message_type is MessageType.METHOD_RETURN:
            ch._peer = peer_from_credentials(reply.body[0], ch._dest)
        with self._cond:
            if self._closed:
                refuse = True
            else:
                refuse = False
                self._ready.append(ch)
                self._cond.notify_all()
        if refuse:
            ch.close()

    def _watch(self, sender: str) -> None:
        if sender in self._watched:
            return
        self._watched.add(sender)  # peers_left_rule() (since listen()) tells when it leaves

        def check(reply: Message | None, err: IpcwireError | None) -> None:
            ok = reply is not None and reply.message_type is MessageType.METHOD_RETURN
            if ok and reply is not None and not reply.body[0]:
                self._hub.peer_left(sender)  # it had left already

        self._conn.send(bus_call("NameHasOwner", "s", [sender]), check)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # -- the Listener API -------------------------------------------------------------------
    def accept(self, *, timeout: float | None = None) -> Channel:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
                if self._ready:
                    return self._ready.popleft()
                if self._hub.error is not None:
                    raise self._hub.error
                self._cond.wait(
                    seconds_left(
                        deadline, f"no client connected to {self.url} within {timeout} s", self.url
                    )
                )

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            ready = list(self._ready)
            self._ready.clear()
            self._cond.notify_all()
        for ch in ready:
            ch.close()
        with self._hub.lock:
            shared = self._hub.users > 1  # its channels still use the connection
        if shared:  # give the name up now (bounded: the hub cuts a daemon not reading)
            self._hub.send(bus_call("ReleaseName", "s", [self._target.name]))
        # else the hang-up releases it; a send in progress (a publish the daemon is not
        # reading) is ended by it rather than waited for
        self._hub.listener = None
        self._hub.release()


def listen(
    endpoint: Endpoint,
    options: ChannelOptions,
    *,
    timeout: float | None = None,
    **kw: Any,
) -> DbusListener:
    """Own the URL's bus name and serve ipcwire channels there; see :func:`ipcwire.listen`.

    ``address=`` picks a bus by address instead of the environment.

    Raises:
        AddressInUse: another connection owns the name (its pid is named).
        PermissionDenied: the bus's policy does not let this process own the name.
        MechanismUnavailable: no bus, with how to start one.
    """
    kw.pop("backlog", None)
    target, address, limit = resolve(endpoint, kw, timeout, ("timeout", "backlog"))
    conn = BusConnection(address, timeout=limit, label=endpoint.url)
    try:
        hub = _Hub(conn, client=False, window=window(target))
        listener = DbusListener(hub, target, options, endpoint.url, options.handshake_timeout)
        try:
            reply = conn.call(request_name(target.name))
        except DbusError as exc:
            raise name_refused(endpoint.url, target, exc) from None
        if not owns_name(reply):
            pid: int | None = None
            try:
                owner = conn.call(bus_call("GetNameOwner", "s", [target.name])).body[0]
                pid = credentials(conn, owner, 5.0).pid
            except IpcwireError:
                pass
            raise name_taken(endpoint.url, target, pid)
        conn.add_match(peers_left_rule())
    except BaseException:
        conn.close()
        raise
    return listener


class DbusSubscription(SubscriptionState, Channel):
    """Receives a listener's ``Event`` signals (publish/subscribe); sending is refused.

    Signals are broadcast by the bus: a subscriber that is not reading does not slow the
    publisher. It holds at most ``SUBSCRIPTION_BUFFER`` bytes of unread events; beyond that it
    is ended (``ChannelBroken`` after the events it holds; ``statistics().dropped`` counts the
    rest), as the bus daemon ends a subscriber that reads too slowly.
    """

    def __init__(self, conn: BusConnection, target: Target, wire: WireFormat, url: str, rule: str):
        super().__init__(target, wire, url)
        self._conn = conn
        self._rule = rule
        self._cond = threading.Condition()
        conn.add_handler(self._signal)
        conn.on_lost(self._lost)

    def _signal(self, msg: Message) -> None:
        if is_event(msg, self._target.path):
            with self._cond:
                kept = self._keep(msg.body[0], msg.body[1])
                self._cond.notify_all()
            if not kept:
                self._conn.cut_off("the subscription did not read its events")

    def _lost(self, err: IpcwireError) -> None:
        with self._cond:
            if self._gone is None:
                self._gone = self._bus_gone(str(err), err)
            self._cond.notify_all()

    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        raise self._only_receives()

    def recv(self, *, timeout: float | None = None) -> Any:
        return self.recv_event(timeout=timeout)[1]

    def recv_event(self, *, timeout: float | None = None) -> tuple[str, Any]:
        """The next event as ``(topic, message)``.

        Raises:
            Timeout, ChannelClosed, ChannelBroken (the bus connection ended).
            FrameTooLarge: the event is over max_frame (skipped).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while (event := self._next()) is None:
                self._cond.wait(seconds_left(deadline, self._no_event(timeout), self.url))
        return self._taken(*event)

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._conn.close()


def subscribe(
    url: str,
    *,
    topic: str | None = None,
    codec: str | None = None,
    address: str | None = None,
    timeout: float | None = None,
) -> DbusSubscription:
    """Subscribe to the ``Event`` signals of the listener at ``url`` (of one ``topic``, or
    all); events published before this returns are not received.

    Raises:
        MechanismUnavailable: no bus. InvalidURL: a bad URL.
    """
    target, options, bus, limit = resolve_subscription(url, codec, address, timeout)
    conn = BusConnection(bus, timeout=limit, label=url)
    try:
        rule = event_rule(target, topic, url)
        sub = DbusSubscription(conn, target, options.wire(), url, rule)
        conn.add_match(rule)
    except BaseException:
        conn.close()
        raise
    return sub

"""D-Bus, blocking driver (the protocol is in ``_proto.py``).

Each client channel has its own bus connection; a listener's channels share the listener's
connection, whose reader thread routes every incoming call to its channel.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from typing import Any, Final

from dbus_fast import Message, MessageType

from ipcwire._core.handshake import ClientHandshake, ServerHandshake
from ipcwire._core.url import Endpoint
from ipcwire._core.wire import WireFormat
from ipcwire._deadline import seconds_left
from ipcwire._stream.retry import backoff_delays
from ipcwire.channel import Channel, ChannelStatistics, Listener, PeerInfo
from ipcwire.dbus._conn import BusConnection, DbusError
from ipcwire.dbus._proto import (
    BUS_NAME,
    CLIENT_PATH,
    ERROR_CLOSED,
    ERROR_REFUSED,
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
from ipcwire.errors import (
    AddressInUse,
    ChannelBroken,
    ChannelClosed,
    ConnectionRefused,
    EndOfChannel,
    FrameTooLarge,
    IpcwireError,
    LocalProtocolError,
    RemoteProtocolError,
)
from ipcwire.options import DEFAULT_CONNECT_TIMEOUT, ChannelOptions, reject_unknown

__all__ = ["DbusChannel", "DbusListener", "DbusSubscription", "connect", "listen", "subscribe"]

log = logging.getLogger("ipcwire")

_DO_NOT_QUEUE: Final = 4
_PRIMARY_OWNER, _ALREADY_OWNER = 1, 4


def _strip(framed: bytes) -> str:
    """A handshake message without its length prefix, as text."""
    return framed[4:].decode()


def handshakes(options: ChannelOptions) -> tuple[ClientHandshake, ServerHandshake]:
    """Fresh client and server handshakes for these options (framing does not apply)."""
    common: dict[str, Any] = {
        "codec": options.codec.name,
        "framing": "length",
        "max_frame": options.max_frame,
        "token": options.token,
        "endpoint": options.url,
    }
    return ClientHandshake(**common), ServerHandshake(**common)


class _Hub:
    """Routes the calls arriving on one connection to its channels and listener."""

    def __init__(self, conn: BusConnection, *, client: bool) -> None:
        self.conn = conn
        self.client = client
        self.lock = threading.Lock()
        self.channels: dict[tuple[str, str], DbusChannel] = {}
        self.listener: DbusListener | None = None
        self.early: list[Message] = []  # a client's messages that beat its channel's setup
        self.opened = False
        self.users = 0
        conn.add_handler(self.handle)
        conn.on_lost(self.lost)

    def register(self, ch: DbusChannel) -> None:
        with self.lock:
            self.opened = True
            self.channels[ch.key] = ch
            self.users += 1
            early, self.early = self.early, []
        for msg in early:
            self.handle(msg)

    def release(self, ch: DbusChannel | None = None) -> None:
        """One user (a channel or the listener) is done; the last one disconnects."""
        with self.lock:
            if ch is not None:
                self.channels.pop(ch.key, None)
            self.users -= 1
            last = self.users <= 0
        if last:
            self.conn.close()

    def handle(self, msg: Message) -> None:
        if msg.message_type is MessageType.SIGNAL:
            if msg.member == "NameOwnerChanged" and msg.sender == BUS_NAME and not msg.body[2]:
                self.peer_left(msg.body[0])
            return
        if msg.message_type is not MessageType.METHOD_CALL:
            return
        if is_call(msg, "Deliver") or is_call(msg, "Close"):
            key = (msg.sender, msg.body[0])
            with self.lock:
                ch = self.channels.get(key)
                if ch is None and self.client and not self.opened:
                    self.early.append(msg)  # the channel is being set up: hold it
                    return
            if ch is None:
                if msg.member == "Deliver":
                    self.refuse(msg, ERROR_CLOSED, "the channel is closed")
                return
            if msg.member == "Deliver":
                ch._incoming(msg)
            else:
                ch._peer_closed()
        elif is_call(msg, "Handshake") and self.listener is not None:
            self.listener._handshake(msg)
        elif msg.interface == "org.freedesktop.DBus.Peer" and msg.member == "Ping":
            self.reply(Message.new_method_return(msg))
        elif not msg.flags & 1:
            self.refuse(msg, "org.freedesktop.DBus.Error.UnknownMethod", "not an ipcwire call")

    def reply(self, msg: Message) -> None:
        try:
            self.conn.send(msg)
        except IpcwireError:
            pass

    def refuse(self, msg: Message, name: str, text: str) -> None:
        self.reply(Message.new_error(msg, name, text))

    def peer_left(self, name: str) -> None:
        with self.lock:
            gone = [ch for (peer, _), ch in self.channels.items() if peer == name]
        for ch in gone:
            ch._peer_gone()
        if self.listener is not None:
            self.listener._forget(name)

    def lost(self, err: IpcwireError) -> None:
        with self.lock:
            chans = list(self.channels.values())
        for ch in chans:
            ch._lost(err)
        if self.listener is not None:
            self.listener._lost()


class DbusChannel(Channel):
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
    ) -> None:
        self.url = url
        self.key = (peer_name, chan)
        self._hub = hub
        self._conn = hub.conn
        self._dest = peer_name
        self._path = path
        self._chan = chan
        self._wire = wire
        self._encode = wire.codec.encode
        self._decode = wire.decode
        self._limit = min(wire.send_limit, MAX_MESSAGE)
        self._max_frame = wire.max_frame
        self._peer = peer or PeerInfo(address=peer_name)
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._queue: deque[Message] = deque()
        self._inflight = 0
        self._inflight_bytes = 0
        self._send_error: IpcwireError | None = None
        self._closed = False
        self._eof = False
        self._gone: IpcwireError | None = None
        self._sent = self._received = self._bytes_sent = self._bytes_received = 0

    # -- called by the hub (reader thread) --------------------------------------------------
    def _incoming(self, msg: Message) -> None:
        with self._cond:
            if self._closed:
                refuse = True
            else:
                refuse = False
                self._queue.append(msg)
                self._cond.notify_all()
        if refuse:
            self._hub.refuse(msg, ERROR_CLOSED, "the channel is closed")

    def _peer_closed(self) -> None:
        with self._cond:
            self._eof = True
            self._cond.notify_all()

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

    def _lost(self, err: IpcwireError) -> None:
        with self._cond:
            if self._gone is None:
                self._gone = err
            self._cond.notify_all()

    def _acked(self, reply: Message | None, err: IpcwireError | None, size: int) -> None:
        with self._cond:
            self._inflight -= 1
            self._inflight_bytes -= size
            if err is not None and self._send_error is None:
                self._send_error = err
            elif (
                reply is not None
                and reply.message_type is MessageType.ERROR
                and self._send_error is None
            ):
                why = (
                    "the peer closed the channel"
                    if reply.error_name == ERROR_CLOSED
                    else error_text(reply)
                )
                self._send_error = ChannelBroken(
                    f"a message to {self.url} was not delivered: {why}", endpoint=self.url
                )
            self._cond.notify_all()

    # -- sending ----------------------------------------------------------------------------
    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        data = self._encode(obj)
        payload = data if type(data) is bytes else bytes(data)
        size = len(payload)
        if size > self._limit:
            raise FrameTooLarge(
                f"message of {size} bytes not sent to {self.url}: over the limit of "
                f"{self._limit} bytes (the peer's max_frame, or what a bus carries); raise "
                f"max_frame= on both sides, or use unix:// for large messages",
                size=size,
                limit=self._limit,
                endpoint=self.url,
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._send_lock:
            with self._cond:
                while True:
                    self._check_send()
                    if not self._inflight or (
                        self._inflight < WINDOW and self._inflight_bytes + size <= WINDOW_BYTES
                    ):
                        break
                    self._cond.wait(
                        seconds_left(
                            deadline,
                            f"send to {self.url} timed out after {timeout} s: the peer is not "
                            f"taking messages ({self._inflight} unacknowledged); nothing was sent",
                            self.url,
                        )
                    )
                self._inflight += 1
                self._inflight_bytes += size
            try:
                msg = deliver_call(self._dest, self._path, self._chan, payload)
                self._conn.send(msg, lambda r, e: self._acked(r, e, size))
            except IpcwireError:
                with self._cond:
                    self._inflight -= 1
                    self._inflight_bytes -= size
                raise
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
    def recv(self, *, timeout: float | None = None) -> Any:
        msg = self._take(timeout)
        self._hub.reply(Message.new_method_return(msg))  # the acknowledgement
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

    def _take(self, timeout: float | None) -> Message:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
                if self._queue:
                    return self._queue.popleft()
                if self._eof:
                    raise EndOfChannel(f"{self.url} closed its end", endpoint=self.url)
                if self._gone is not None:
                    raise self._gone
                self._cond.wait(
                    seconds_left(
                        deadline,
                        f"no message from {self.url} within {timeout} s"
                        if timeout
                        else f"no message from {self.url} yet",
                        self.url,
                    )
                )

    # -- the rest ---------------------------------------------------------------------------
    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            unread = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for msg in unread:  # never delivered: tell their sender
            self._hub.refuse(msg, ERROR_CLOSED, "the channel was closed before reading this")
        if not self._eof and self._gone is None:
            self._hub.reply(close_call(self._dest, self._path, self._chan))
        self._hub.release(self)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def peer(self) -> PeerInfo | None:
        return self._peer

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
            buffered_bytes=sum(len(m.body[1]) for m in list(self._queue)),
        )


def credentials(conn: BusConnection, name: str, timeout: float) -> PeerInfo:
    """The peer's pid and uid as the bus daemon saw them (from the kernel)."""
    try:
        reply = conn.call(bus_call("GetConnectionCredentials", "s", [name]), timeout=timeout)
    except IpcwireError:
        return PeerInfo(address=name)
    return peer_from_credentials(reply.body[0], name)


def peer_from_credentials(creds: dict[str, Any], name: str) -> PeerInfo:
    def value(key: str) -> int | None:
        v = creds.get(key)
        got = getattr(v, "value", None)
        return got if isinstance(got, int) else None

    return PeerInfo(pid=value("ProcessID"), uid=value("UnixUserID"), address=name)


def _options(endpoint: Endpoint, kw: dict[str, Any], extra: tuple[str, ...]) -> str | None:
    address = kw.pop("address", None) or endpoint.params.get("address")
    reject_unknown(kw, endpoint, ("address", *extra))
    return address if isinstance(address, str) else None


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
    address = _options(endpoint, kw, ("timeout", "reconnect"))
    target = parse_target(endpoint)
    limit = timeout if timeout is not None else DEFAULT_CONNECT_TIMEOUT
    start = time.monotonic()
    conn = BusConnection(bus_address(target, address), timeout=limit, label=endpoint.url)
    try:
        owner = _find_owner(conn, target, endpoint.url, reconnect, start, limit)
        hub = _Hub(conn, client=True)
        conn.add_match(owner_changed_rule(owner))
        chan, peer_max = _client_handshake(conn, owner, target, options, limit)
        peer = credentials(conn, owner, limit)
    except BaseException:
        conn.close()
        raise
    wire = options.wire()
    wire.send_limit = peer_max
    ch = DbusChannel(hub, owner, target.path, chan, wire, endpoint.url, peer)
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
            if exc.name != "org.freedesktop.DBus.Error.NameHasNoOwner":
                raise
            left = start + (reconnect or 0) - time.monotonic()
            if left <= 0:
                raise ConnectionRefused(
                    f"nothing is listening at {url}: no connection owns {target.describe()}. "
                    f"Start the listener first, or pass reconnect=SECONDS to keep trying",
                    endpoint=url,
                ) from None
            time.sleep(min(next(delays), left))


def _client_handshake(
    conn: BusConnection, owner: str, target: Target, options: ChannelOptions, limit: float
) -> tuple[str, int]:
    hs, _ = handshakes(options)
    text, chan = _strip(hs.hello()), ""
    while True:
        try:
            reply = conn.call(handshake_call(owner, target.path, chan, text), timeout=limit)
        except DbusError as exc:
            if exc.name == ERROR_REFUSED:
                raise ConnectionRefused(f"{options.url}: {exc}", endpoint=options.url) from None
            raise RemoteProtocolError(
                f"{target.describe()} at {target.path} is not an ipcwire listener ({exc})",
                endpoint=options.url,
            ) from None
        chan, answer = reply.body
        step = hs.receive(answer.encode())
        if step.done:
            return chan, hs.peer_max_frame
        text = _strip(step.send)


class DbusListener(Listener):
    """Owns a bus name and accepts channels; :meth:`publish` emits signals."""

    def __init__(
        self, hub: _Hub, target: Target, options: ChannelOptions, url: str, timeout: float
    ) -> None:
        self.url = url
        self._hub = hub
        self._conn = hub.conn
        self._target = target
        self._options = options
        self._timeout = timeout
        self._cond = threading.Condition()
        self._ready: deque[DbusChannel] = deque()
        self._pending: dict[tuple[str, str], tuple[ServerHandshake, float]] = {}
        self._watched: set[str] = set()
        self._ids = itertools.count(1)
        self._closed = False
        hub.users += 1
        hub.listener = self

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def unique_name(self) -> str:
        """This listener's connection name on the bus."""
        return self._conn.unique_name

    def publish(self, obj: Any, *, topic: str = "") -> None:
        """Emit ``obj`` as an ``Event`` signal to every subscriber (of ``topic``).

        Raises:
            ChannelClosed: the listener is closed.
        """
        if self._closed:
            raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
        data = self._options.codec.encode(obj)
        self._conn.send(event_signal(self._target.path, topic, bytes(data)))

    # -- called by the hub (reader thread) --------------------------------------------------
    def _handshake(self, msg: Message) -> None:
        sender: str = msg.sender
        chan, text = msg.body
        if self._closed:
            self._hub.refuse(msg, ERROR_REFUSED, "the listener is closed")
            return
        now = time.monotonic()
        for key in [k for k, (_, dl) in self._pending.items() if dl < now]:
            del self._pending[key]
        if not chan:
            chan = f"c{next(self._ids)}"
            self._pending[(sender, chan)] = (handshakes(self._options)[1], now + self._timeout)
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
            ch = DbusChannel(self._hub, sender, CLIENT_PATH, chan, wire, self.url)
            self._hub.register(ch)
            # accept() hands the channel out once the bus said who the peer is
            self._conn.send(
                bus_call("GetConnectionCredentials", "s", [sender]),
                lambda r, e: self._credentials(ch, r),
            )
        self._hub.reply(Message.new_method_return(msg, "ss", [chan, _strip(step.send)]))

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
        self._watched.add(sender)
        rule = owner_changed_rule(sender)
        self._conn.send(bus_call("AddMatch", "s", [rule]))

        def check(reply: Message | None, err: IpcwireError | None) -> None:
            ok = reply is not None and reply.message_type is MessageType.METHOD_RETURN
            if ok and reply is not None and not reply.body[0]:
                self._hub.peer_left(sender)  # it left before the match was in place

        self._conn.send(bus_call("NameHasOwner", "s", [sender]), check)

    def _forget(self, name: str) -> None:
        for key in [k for k in self._pending if k[0] == name]:
            del self._pending[key]
        if name in self._watched:
            self._watched.discard(name)
            self._conn.remove_match(owner_changed_rule(name))

    def _lost(self) -> None:
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
                if self._conn.error is not None:
                    raise ChannelBroken(
                        f"listener {self.url}: {self._conn.error}", endpoint=self.url
                    )
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
        try:
            self._conn.send(bus_call("ReleaseName", "s", [self._target.name]))
        except IpcwireError:
            pass
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
        MechanismUnavailable: no bus, with how to start one.
    """
    kw.pop("backlog", None)
    address = _options(endpoint, kw, ("timeout", "backlog"))
    target = parse_target(endpoint)
    limit = timeout if timeout is not None else DEFAULT_CONNECT_TIMEOUT
    conn = BusConnection(bus_address(target, address), timeout=limit, label=endpoint.url)
    try:
        hub = _Hub(conn, client=False)
        listener = DbusListener(hub, target, options, endpoint.url, options.handshake_timeout)
        reply = conn.call(bus_call("RequestName", "su", [target.name, _DO_NOT_QUEUE]))
        if reply.body[0] not in (_PRIMARY_OWNER, _ALREADY_OWNER):
            raise _name_taken(conn, target, endpoint.url)
    except BaseException:
        conn.close()
        raise
    return listener


def _name_taken(conn: BusConnection, target: Target, url: str) -> AddressInUse:
    from ipcwire._procfs import describe_pid

    pid: int | None = None
    try:
        owner = conn.call(bus_call("GetNameOwner", "s", [target.name])).body[0]
        pid = credentials(conn, owner, 5.0).pid
    except IpcwireError:
        pass
    who = describe_pid(pid) if pid else "another connection"
    return AddressInUse(
        f"{url} is in use: {who} owns {target.describe()}; stop it, or pick another name",
        pid=pid,
        endpoint=url,
    )


class DbusSubscription(Channel):
    """Receives a listener's ``Event`` signals (publish/subscribe); sending is refused.

    Signals are broadcast by the bus: a subscriber that is not reading does not slow the
    publisher; the bus buffers for it (up to its limits, then disconnects it).
    """

    def __init__(self, conn: BusConnection, target: Target, wire: WireFormat, url: str, rule: str):
        self.url = url
        self._conn = conn
        self._target = target
        self._decode = wire.decode
        self._max_frame = wire.max_frame
        self._rule = rule
        self._cond = threading.Condition()
        self._queue: deque[tuple[str, bytes]] = deque()
        self._closed = False
        self._received = self._bytes_received = 0
        conn.add_handler(self._signal)
        conn.on_lost(lambda err: self._wake())

    def _signal(self, msg: Message) -> None:
        if (
            msg.message_type is MessageType.SIGNAL
            and msg.interface == INTERFACE
            and msg.member == "Event"
            and msg.path == self._target.path
        ):
            with self._cond:
                self._queue.append((msg.body[0], msg.body[1]))
                self._cond.notify_all()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        raise LocalProtocolError(
            f"{self.url} is a subscription: it only receives; publish with the listener's publish()"
        )

    def recv(self, *, timeout: float | None = None) -> Any:
        return self.recv_event(timeout=timeout)[1]

    def recv_event(self, *, timeout: float | None = None) -> tuple[str, Any]:
        """The next event as ``(topic, message)``.

        Raises:
            Timeout, ChannelClosed, ChannelBroken (the bus connection ended).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
                if self._queue:
                    topic, payload = self._queue.popleft()
                    break
                if self._conn.error is not None:
                    raise self._conn.error
                self._cond.wait(seconds_left(deadline, f"no event from {self.url} yet", self.url))
        self._received += 1
        self._bytes_received += len(payload)
        return topic, self._decode(memoryview(payload))

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._conn.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            messages_sent=0,
            messages_received=self._received,
            bytes_sent=0,
            bytes_received=self._bytes_received,
            buffered_bytes=sum(len(p) for _, p in list(self._queue)),
        )


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
    from ipcwire._core.url import parse_url

    endpoint = parse_url(url)
    kw: dict[str, Any] = {} if codec is None else {"codec": codec}
    options = ChannelOptions.build(endpoint, kw)
    target = parse_target(endpoint)
    limit = timeout if timeout is not None else DEFAULT_CONNECT_TIMEOUT
    conn = BusConnection(bus_address(target, address), timeout=limit, label=url)
    try:
        rule = event_rule(target, topic)
        sub = DbusSubscription(conn, target, options.wire(), url, rule)
        conn.add_match(rule)
    except BaseException:
        conn.close()
        raise
    return sub

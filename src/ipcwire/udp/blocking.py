"""``udp:`` blocking driver.

* ``ipcwire.connect("udp://127.0.0.1:9000")``: connected mode. The socket is bound to a
  free loopback port (or the matching family's any-address for other hosts) and connected to
  the peer: ``send``/``recv`` talk to that peer only, and an ICMP "port unreachable" comes
  back as ``ConnectionRefused`` on the next call (the channel stays usable).
* ``ipcwire.listen("udp://127.0.0.1:9000")``: ``accept()`` returns a channel per peer
  address, as datagrams from new peers arrive. There is no reader thread: whichever caller
  waits (``accept`` or a peer channel's ``recv``) reads the socket and sorts what it reads to
  the peers' queues, so a reply costs no thread switch; the others wait for it. Each peer's
  queue is bounded and overflow is counted in ``statistics().dropped``; datagrams nobody is
  waiting for stay in the socket's receive buffer. Silent peers end: see :func:`listen`.
* :func:`bind` (unconnected: ``recv_from``/``send_to`` with anyone), :func:`send_to`
  (fire-and-forget, one datagram), :func:`pair` (two connected channels, for tests).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from ipcwire._core.codecs import Codec
from ipcwire._core.url import Endpoint, parse_url
from ipcwire.channel import Channel, ChannelStatistics, Listener
from ipcwire.errors import (
    ChannelClosed,
    ConnectionRefused,
    IpcwireError,
    Timeout,
)
from ipcwire.options import ChannelOptions
from ipcwire.udp._channel import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_PEERS,
    STALE_MAX,
    Address,
    ChannelCore,
    ListenerCore,
    PeerCore,
    address_url,
    closed_error,
    connect_addresses,
    idle_timeout_option,
    max_peers_option,
    not_connected_error,
    options_for,
    send_address,
)
from ipcwire.udp._socket import (
    DatagramFormat,
    bind_endpoint,
    bind_socket,
    connect_socket,
    connected_pair,
)
from ipcwire.udp._sockio import TOO_LARGE, Interrupted, SocketIO

__all__ = [
    "UdpChannel",
    "UdpListener",
    "bind",
    "connect",
    "listen",
    "pair",
    "send_to",
]

PEER_QUEUE: Final = 1024  # datagrams buffered per accepted peer before dropping


class UdpChannel(ChannelCore, Channel):
    """A UDP socket as a channel: connected (one peer) or unconnected (anyone)."""

    def __init__(self, sock: socket.socket, options: ChannelOptions, url: str) -> None:
        peer_addr: Address | None = None
        with contextlib.suppress(OSError):
            peer_addr = sock.getpeername()[:2]
        fmt = DatagramFormat(options, sock.family)
        super().__init__(fmt, url, peer_addr)
        self._io = SocketIO(sock, fmt, url)
        self._io.channel = weakref.ref(self)
        self._pending: deque[tuple[Any, Address]] = deque()
        self._stale = 0  # datagrams request() discarded as earlier replies (in dropped)

    @property
    def local_address(self) -> Address:
        """The (host, port) this socket is bound to."""
        addr: Address = self._io.sock.getsockname()[:2]
        return addr

    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        if self._peer_addr is None and not self._io.closed:
            raise not_connected_error(self.url)
        data = self._fmt.pack(obj)
        self._io.send(data, None, timeout)
        self._sent += 1
        self._bytes_sent += len(data)

    def send_to(self, obj: Any, address: Address | str, *, timeout: float | None = None) -> None:
        """Send one datagram to ``address`` (``(host, port)`` or ``udp://host:port``).

        Raises:
            FrameTooLarge, Timeout, ChannelClosed, ChannelBroken, InvalidURL.
        """
        if isinstance(address, str):
            address = send_address(address)
        data = self._fmt.pack(obj)
        self._io.send(data, address, timeout)
        self._sent += 1
        self._bytes_sent += len(data)

    def recv(self, *, timeout: float | None = None) -> Any:
        if self._pending or self._fmt.ndjson or self._io.closed:
            return self.recv_from(timeout=timeout)[0]
        # The common case without the queue: one datagram is one message, decoded while the
        # receive holds the socket's buffer (another thread's would overwrite it after).
        msg, size, addr = self._io.recv(timeout, self._fmt.decode)
        if msg is TOO_LARGE:
            raise self._fmt.too_large(size, address_url(addr))
        self._bytes_received += size
        self._received += 1
        return msg

    def recv_from(self, *, timeout: float | None = None) -> tuple[Any, Address]:
        """The next message and the (host, port) it came from.

        Raises:
            Timeout, FrameTooLarge (that datagram is dropped), RemoteProtocolError,
            ConnectionRefused (connected mode: the peer is not there), ChannelClosed.
        """
        if self._io.closed:
            raise closed_error(self.url, self)
        pending = self._pending
        while True:
            try:  # (another thread receiving may have taken what was there)
                item = pending.popleft()
                break
            except IndexError:
                pass
            msgs, size, addr = self._io.recv(timeout, self._fmt.unpack)
            if msgs is TOO_LARGE:
                raise self._fmt.too_large(size, address_url(addr))
            self._bytes_received += size
            pending.extend([(msg, addr) for msg in msgs])
        if isinstance(item[0], IpcwireError):
            raise item[0]  # a line of an NDJSON datagram: the others are still delivered
        self._received += 1
        return item

    def _exchange(self, obj: Any, *, timeout: float | None) -> Any:
        """:meth:`request` in its turn: first discard what the peer sent before this request
        (a duplicated or late reply to an earlier one: UDP duplicates, and nothing in a bare
        datagram says which request it answers), so that it is not taken for this reply."""
        if self._peer_addr is not None:
            self._discard_stale()
        return super()._exchange(obj, timeout=timeout)

    def _discard_stale(self) -> None:
        """Drop the messages queued and the datagrams the socket holds (at most STALE_MAX),
        counted in ``statistics().dropped``; not when another thread is receiving.

        Raises:
            ConnectionRefused: an ICMP error for an earlier datagram (the channel stays
                usable; nothing was sent).
        """
        stale = len(self._pending)
        self._pending.clear()
        for _ in range(STALE_MAX):
            try:
                _, size, _ = self._io.recv(0)
            except Timeout:  # nothing more (or another thread's receive holds the socket)
                break
            self._bytes_received += size
            stale += 1
        self._stale += stale

    def close(self) -> None:
        self._io.close()

    @property
    def closed(self) -> bool:
        return self._io.closed

    def statistics(self) -> ChannelStatistics:
        """The counters; ``dropped`` is the datagrams the kernel dropped at this socket plus
        the earlier replies ``request()`` discarded (duplicated or late)."""
        return self._statistics(0, self._io.drops() + self._stale)


class _PeerChannel(PeerCore["UdpListener"], Channel):
    """One peer of a :class:`UdpListener`: its datagrams, and replies to its address."""

    def __init__(self, listener: UdpListener, addr: Address) -> None:
        super().__init__(listener, addr)
        self._queue: deque[Any] = deque()  # guarded by the listener's condition
        # each queued item's share of its datagram's bytes (the last message of a datagram
        # carries them all), and their sum: statistics().buffered_bytes
        self._sizes: deque[int] = deque()
        self._queued_bytes = 0
        self.dropped = 0

    def _put(self, data: memoryview) -> None:
        """Queue the messages of one datagram (the listener's condition is held)."""
        fmt = self._listener._fmt
        queue = self._queue
        n = data.nbytes
        self._bytes_received += n
        if not fmt.ndjson:  # one datagram, one message (what _append does, without a call)
            if len(queue) >= PEER_QUEUE:
                self.dropped += 1
                return
            try:
                item = fmt.decode(data)
            except Exception as exc:  # this peer's error, raised by its recv(), not the reader's
                item = fmt.bad(exc)
            queue.append(item)
            self._sizes.append(n)
            self._queued_bytes += n
            return
        try:
            msgs: list[Any] = fmt.unpack(data)
        except IpcwireError as exc:
            msgs = [exc]
        last = len(msgs) - 1
        for i, msg in enumerate(msgs):  # errors count too: garbage must not grow the queue
            if len(queue) >= PEER_QUEUE:
                self.dropped += 1
            else:
                self._append(msg, data.nbytes if i == last else 0)

    def _append(self, item: Any, nbytes: int) -> None:
        self._queue.append(item)
        self._sizes.append(nbytes)
        self._queued_bytes += nbytes

    def _put_error(self, exc: IpcwireError) -> None:
        """Queue the error raised in the place of a datagram (the condition is held)."""
        if len(self._queue) >= PEER_QUEUE:
            self.dropped += 1
        else:
            self._append(exc, 0)

    def _done_waiting(self) -> bool:  # (a closed listener's peers go on)
        return bool(self._queue) or self._closed or self._ended is not None

    def recv(self, *, timeout: float | None = None) -> Any:
        listener = self._listener
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        wait = timeout  # the first wait as given (see _pump), unless the idle time is shorter
        with listener._lock:
            while not (self._queue or self._closed):
                end = self._idle_end(deadline)
                if end is not None:
                    left = end - now
                    if left <= 0:  # idle: unless the kernel holds a datagram from the peer
                        listener._drain(self._done_waiting)
                        if not self._done_waiting():
                            raise self._end()
                        break
                    step = listener.idle_step
                    wait = left if left < step else left // step * step
                if listener._pump(self._done_waiting, deadline if end is None else end, wait):
                    if self._ended is not None and not (self._queue or self._closed):
                        raise self._ended  # evicted for a new peer (ListenerCore._make_room)
                    break
                if end is None:
                    waited = "yet" if timeout == 0 else f"within {timeout} s"  # (as unix://)
                    msg = f"no message from {self.url} {waited}"
                    raise Timeout(msg, endpoint=listener.url)
                now = time.monotonic()  # idle time passed, or activity put it off: look again
                wait = None if deadline is None else deadline - now
            if self._closed:
                raise closed_error(self.url, self)
            item = self._queue.popleft()  # (done waiting, not closed: something is queued)
            self._queued_bytes -= self._sizes.popleft()
            if isinstance(item, IpcwireError):
                raise item
            self._received += 1
            return item

    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        if self._closed:
            raise closed_error(self.url, self)
        data = self._listener._fmt.pack(obj)
        self._listener._io.send(data, self.addr, timeout)
        self._active = time.monotonic()
        self._sent += 1
        self._bytes_sent += len(data)

    def close(self) -> None:
        with self._listener._cond:
            if self._closed:
                return
            self._closed = True
            self._listener._wake_waiters()
        self._listener._forget(self)

    def statistics(self) -> ChannelStatistics:
        """The counters; ``dropped`` is this peer's queue overflow plus the datagrams the
        kernel dropped at the listener's socket (it does not say from which peer)."""
        return self._statistics(self._queued_bytes, self.dropped + self._listener._io.drops())


class UdpListener(ListenerCore[_PeerChannel], Listener):
    """A bound UDP socket that hands out one channel per peer address."""

    def __init__(
        self,
        sock: socket.socket,
        options: ChannelOptions,
        url: str,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        max_peers: int | None = DEFAULT_MAX_PEERS,
    ) -> None:
        super().__init__(options, url, sock.family, idle_timeout, max_peers)
        self._io = SocketIO(sock, self._fmt, url)
        self._new: deque[_PeerChannel] = deque()
        # Held with ``with self._lock`` (a Condition's own ``with`` is two Python calls a
        # message); never taken twice by one thread.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._reading = False  # a caller is reading the socket for everyone (see the module)
        self._waiting = 0  # callers in cond.wait() for the reader (none: no notify to do)

    def _new_peer(self, addr: Address) -> _PeerChannel:
        return _PeerChannel(self, addr)

    def _wake_peer(self, ch: _PeerChannel) -> None:
        self._cond.notify_all()  # (held: a datagram is being sorted)

    def _pump(self, done: Callable[[], bool], deadline: float | None, wait: float | None) -> bool:
        """Read and sort datagrams until ``done()`` (True) or ``deadline`` (False); the
        condition is held (and released while reading or waiting). The first wait is ``wait``
        (as given), then until the deadline. Called when not ``done()`` (the callers have
        just looked).
        Only one caller reads at a time; the others wait until it has sorted their datagram to
        them, or until it stops reading and one of them takes over.

        Raises:
            ChannelClosed, ChannelBroken: the socket failed (for every waiting caller).
        """
        while True:
            if self._reading:
                self._waiting += 1
                try:
                    self._cond.wait(wait)
                finally:
                    self._waiting -= 1
            else:
                self._read(wait)
            if done():
                return True
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    return False

    def _read(self, wait: float | None) -> bool:
        """Read one datagram for everyone and give it to its peer's channel (a new one for a
        new peer); the condition is held, and released while reading. False if none came
        within ``wait``."""
        cond = self._cond
        self._reading = True
        cond.release()
        try:
            try:
                data, size, addr = self._io.recv(wait, interruptible=True)  # (one thread reads)
            finally:
                cond.acquire()
                self._reading = False
                if self._waiting:
                    cond.notify_all()  # sorted something, or another waiter reads next
        except (Interrupted, ConnectionRefused):
            return True  # a close to look at; or an ICMP for a reply to a peer that left
        except Timeout:
            return False
        ch = self._peers.get(addr)
        if ch is None:
            ch = self._admit(addr, len(self._new))
            if ch is None:
                return True
            self._new.append(ch)
        else:
            ch._active = time.monotonic()
        if data is TOO_LARGE:
            ch._put_error(self._fmt.too_large(size, address_url(addr)))
        else:
            ch._put(data)
        return True

    def _drain(self, done: Callable[[], bool]) -> None:
        """Sort what the socket holds (at most PEER_QUEUE datagrams) until ``done()``, unless
        a caller is reading (and so sorting each datagram as it comes): so that a datagram the
        kernel got before a peer was found idle is not taken for a new peer's."""
        for _ in range(PEER_QUEUE):
            if done() or self._reading or not self._read(0):
                return

    def _wake_waiters(self) -> None:
        """Something closed: wake every waiter, including the one reading the socket."""
        self._cond.notify_all()
        if self._reading:
            self._io.interrupt()

    @property
    def local_address(self) -> Address:
        """The (host, port) bound (the real port when the URL said 0)."""
        addr: Address = self._io.sock.getsockname()[:2]
        return addr

    def _accept_ready(self) -> bool:
        return bool(self._new) or self._closed

    def accept(self, *, timeout: float | None = None) -> Channel:
        """A channel for the next peer that sent a datagram.

        Raises:
            Timeout: no new peer in time.
            ChannelClosed: the listener was closed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._closed:
                raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
            if not self._new and not self._pump(self._accept_ready, deadline, timeout):
                raise Timeout(f"no new peer at {self.url} within {timeout} s", endpoint=self.url)
            if self._closed:
                raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
            return self._new.popleft()

    def _forget(self, ch: _PeerChannel) -> None:
        with self._cond:
            last = self._release(ch)
        if last:
            self._io.close()

    def close(self) -> None:
        """Stop accepting; channels already accepted keep working until they close."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            while self._new:  # accepted by nobody: close them
                ch = self._new.popleft()
                ch._closed = True
                self._release(ch)
            last = self._stop()
            self._wake_waiters()
        if last:
            self._io.close()


def connect(
    endpoint: Endpoint, options: ChannelOptions, *, bind: str | None = None, **kw: Any
) -> UdpChannel:
    """Connected mode: a socket that talks to the peer at the URL; see the module.

    ``bind="udp://127.0.0.1:0"``: where this end receives (default: a free port on loopback
    for a loopback peer, else on every address).

    Raises:
        InvalidURL: no host or port.
        ConfigurationError: ``token=`` (UDP has no handshake) or unknown options.
        AddressInUse, PermissionDenied: binding ``bind``.
    """
    addr, local = connect_addresses(endpoint, bind, kw)
    sock = bind_socket(local, endpoint.url)
    try:
        connect_socket(sock, addr, addr.url())
        return UdpChannel(sock, options, addr.url())
    except BaseException:
        sock.close()
        raise


def listen(endpoint: Endpoint, options: ChannelOptions, **kw: Any) -> UdpListener:
    """Bind (loopback unless the URL names a host) and accept per-peer channels.

    ``idle_timeout=300.0`` (seconds; or ``?idle_timeout=`` in the URL): UDP has no close, so
    a peer's channel ends when it has been inactive that long. Activity is a datagram from the
    peer or a message sent to it on its channel, counted from its first datagram. A ``recv``
    that finds nothing queued (what was queued is delivered first) then raises
    ``EndOfChannel``, so iteration and ``serve()``'s handler end; ``recv(timeout=t)`` waits
    at most until the earlier of its own deadline and that moment. The listener then forgets
    the peer: a later datagram from the same address is a new peer, for ``accept()``. The
    ended channel still sends to the address until it is closed, and each further ``recv``
    raises EndOfChannel. ``None``: keep silent peers (and their channels) for ever.

    ``max_peers=1024`` (or ``?max_peers=``): the most peers kept at once. A new peer past it
    ends the channel of the peer silent longest, as if its idle time had passed (counted in
    the listener's ``evicted``); ``None``: no limit.

    Raises:
        AddressInUse, PermissionDenied, InvalidURL.
        ConfigurationError: ``idle_timeout`` not a finite number over 0 or None;
            ``max_peers`` not a whole number of at least 1 or None; unknown options.
    """
    max_peers = max_peers_option(endpoint, kw)
    idle_timeout = idle_timeout_option(endpoint, kw)
    sock, url = bind_endpoint(endpoint, endpoint.url)
    try:
        return UdpListener(sock, options, url, idle_timeout, max_peers)
    except BaseException:
        sock.close()
        raise


def bind(
    url: str = "udp://127.0.0.1:0",
    *,
    codec: str | Codec | None = None,
    framing: str | None = None,
    max_frame: int | None = None,
) -> UdpChannel:
    """An unconnected socket bound at ``url``: ``recv_from()`` from anyone, ``send_to()``
    anyone (fire-and-forget).

    Raises:
        AddressInUse, PermissionDenied, InvalidURL, ConfigurationError.
    """
    kw = {k: v for k, v in (("codec", codec), ("framing", framing), ("max_frame", max_frame)) if v}
    endpoint = parse_url(url)
    options = ChannelOptions.build(endpoint, kw)
    sock, bound = bind_endpoint(endpoint, url)
    return UdpChannel(sock, options, bound)


def send_to(url: str, obj: Any, **options: Any) -> None:
    """Fire and forget: one datagram to ``url``, from a throwaway socket.

    Raises:
        FrameTooLarge: over the datagram limit (nothing sent).
        InvalidURL, ConfigurationError.
    """
    with connect(parse_url(url), options_for(url, options)) as ch:
        ch.send(obj)


def pair(**options: Any) -> tuple[UdpChannel, UdpChannel]:
    """Two UDP channels on loopback, each connected to the other.

    Raises:
        ConfigurationError: bad options.
    """
    out = [UdpChannel(s, options_for(p.url(), options), p.url()) for s, p in connected_pair()]
    return out[0], out[1]

"""``udp:`` asyncio driver: the blocking driver's modes on ``loop.create_datagram_endpoint``.

Datagrams arrive whether or not anyone is receiving, so each channel queues at most
``QUEUE`` messages; more are dropped and counted in ``statistics().dropped`` (UDP has no way to
slow the sender down).
"""

from __future__ import annotations

import abc
import asyncio
import socket
import time
import weakref
from typing import Any, Final

from ipcwire._core.url import Endpoint, parse_url
from ipcwire.aio._read_size import bound_reads
from ipcwire.aio._without_loop import close_transport, handed_to_loop
from ipcwire.aio.channel import AcceptQueue, AioChannel, AioListener
from ipcwire.channel import ChannelStatistics
from ipcwire.options import ChannelOptions, reject_unknown
from ipcwire.udp._aio_queue import QUEUE, MessageQueue
from ipcwire.udp._channel import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_PEERS,
    STALE_MAX,
    Address,
    ChannelCore,
    ListenerCore,
    PeerCore,
    closed_error,
    connect_addresses,
    idle_timeout_option,
    max_peers_option,
    not_connected_error,
    options_for,
    os_error,
    send_address,
)
from ipcwire.udp._socket import (
    READ_SIZE,
    DatagramFormat,
    bind_endpoint,
    bind_socket,
    connect_socket,
    connected_pair,
    proc_drops,
)

__all__ = ["QUEUE", "AioUdpChannel", "AioUdpListener", "connect", "listen"]


_YIELD_EVERY: Final = 64  # sends between two turns given to the event loop (see _pace)


class _Endpoint:
    """The owner of a datagram endpoint (a channel, or a listener): its transport, and the
    socket under it (for the empty datagrams ``transport.sendto`` skips)."""

    _transport: asyncio.DatagramTransport | None
    _sock: socket.socket | None
    _loop: asyncio.AbstractEventLoop | None = None  # (set once the socket is in it)
    _kernel_drops = 0
    _sending = False  # in _send: an error the socket reports now is this send's
    _send_error: OSError | None = None
    _unyielded = 0  # sends since this endpoint last let the event loop run

    async def _pace(self) -> None:
        """Let the event loop run every ``_YIELD_EVERY`` sends. A datagram send never waits
        (there is no backpressure: the kernel drops what a receiver has no room for), so a
        task sending in a loop never gave the loop back: every other task of that loop,
        the receiver of these very datagrams included, stood still until it stopped."""
        self._unyielded += 1
        if self._unyielded >= _YIELD_EVERY:
            self._unyielded = 0
            await asyncio.sleep(0)

    def _send(self, url: str, data: Any, addr: Address | None) -> None:
        """Send one datagram; raise what the socket refused it with at once, as the blocking
        driver does (``transport.sendto`` hands it to ``error_received`` instead, and the
        datagram was not sent), e.g. ``ConnectionRefused`` after an ICMP port unreachable.

        Raises:
            ConnectionRefused (the channel stays usable), ChannelBroken, ChannelClosed.
        """
        t = self._transport
        if t is None:
            raise closed_error(url)
        self._sending = True
        try:
            _sendto(t, self._sock, data, addr)
        except OSError as exc:  # an empty datagram, sent by hand
            self._send_error = exc
        finally:
            self._sending = False
        refused, self._send_error = self._send_error, None
        if refused is not None:
            raise os_error(refused, url, "sending to") from refused

    def _sent_error(self, exc: Exception) -> bool:
        """Keep ``exc`` for :meth:`_send` to raise, if a send is under way."""
        if self._sending and isinstance(exc, OSError):
            self._send_error = exc
            return True
        return False

    def _drops(self) -> int:
        """Datagrams the kernel dropped at this socket (receive buffer full), as far as the
        OS tells (Linux: /proc/net/udp); the last count once the socket is closed."""
        sock = self._sock
        if sock is not None and sock.fileno() >= 0:
            found = proc_drops(sock)
            if found is not None:
                self._kernel_drops = max(self._kernel_drops, found)
        return self._kernel_drops

    async def _open(self, sock: socket.socket) -> None:
        """Put ``sock`` in the event loop; its datagrams go to :meth:`_datagram`."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
        bound_reads(transport, READ_SIZE)
        self._loop = loop
        self._transport = transport
        self._sock = sock

    @property
    def local_address(self) -> Address:
        """The (host, port) this socket is bound to (the real port when the URL said 0)."""
        assert self._transport is not None
        addr = self._transport.get_extra_info("sockname")
        return (addr[0], addr[1])

    def _drain(self, q: MessageQueue) -> bool:
        """Read what the socket holds (at most QUEUE datagrams) until ``q`` has something;
        True then. A datagram (or an ICMP error) the kernel got in time, which the event
        loop has not read yet (asyncio reads one datagram per socket per turn, and a task
        may have kept it busy), is seen by ``recv(timeout=0)``, and is not taken for a
        listener's peer being idle."""
        sock = self._sock
        if sock is None or self._transport is None or self._transport.is_closing():
            return bool(q.items)
        for _ in range(QUEUE):
            if q.items:
                break
            try:
                data, addr = sock.recvfrom(READ_SIZE)
            except OSError as exc:
                if not isinstance(exc, BlockingIOError):  # (BlockingIOError: nothing more)
                    self._error(exc)  # as the event loop would have
                break
            self._datagram(data, (addr[0], addr[1]))
        return bool(q.items)

    @abc.abstractmethod
    def _datagram(self, data: bytes, addr: Address) -> None:
        """One datagram arrived from ``addr``."""

    @abc.abstractmethod
    def _error(self, exc: Exception) -> None:
        """The socket reported an error (an ICMP error for an earlier datagram)."""

    @abc.abstractmethod
    def _lost(self) -> None:
        """The transport closed."""


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: _Endpoint) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner._datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        self.owner._error(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._lost()


class AioUdpChannel(_Endpoint, ChannelCore, AioChannel):
    """A UDP socket as an asyncio channel (connected, or unconnected with send_to)."""

    def __init__(
        self,
        options: ChannelOptions,
        url: str,
        family: socket.AddressFamily,
        peer_addr: Address | None = None,
    ) -> None:
        super().__init__(DatagramFormat(options, family), url, peer_addr)
        self._q = MessageQueue(url)
        self._q.channel = weakref.ref(self)
        self._transport: asyncio.DatagramTransport | None = None
        self._sock: socket.socket | None = None
        self._closed = False
        self._only_from: Address | None = None  # connected: its peer's datagrams only
        self._stale = 0  # what request() discarded as earlier replies (in dropped)

    async def _open(self, sock: socket.socket) -> None:
        if self._peer_addr is not None:  # connected: the kernel's own idea of the peer
            self._only_from = sock.getpeername()[:2]
        await super()._open(sock)

    def _datagram(self, data: bytes, addr: Address) -> None:
        if self._only_from is not None and addr != self._only_from:
            return  # another address sent it between bind() and connect(): not the peer's
        self._bytes_received += len(data)
        self._q.put_datagram(self._fmt, data, addr)

    def _error(self, exc: Exception) -> None:
        if not self._sent_error(exc) and isinstance(exc, OSError):
            self._q.put(os_error(exc, self.url, "receiving from"))

    def _lost(self) -> None:
        self._q.wake()

    def _check_open(self) -> asyncio.DatagramTransport:
        if self._closed or self._transport is None:
            raise closed_error(self.url, self)
        return self._transport

    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        self._check_open()
        if self._peer_addr is None:
            raise not_connected_error(self.url)
        data = self._fmt.pack(obj)
        self._send(self.url, data, None)
        self._sent += 1
        self._bytes_sent += len(data)
        await self._pace()

    async def send_to(
        self, obj: Any, address: Address | str, *, timeout: float | None = None
    ) -> None:
        """Send one datagram to ``address`` (``(host, port)`` or ``udp://host:port``).

        Raises:
            FrameTooLarge, ChannelClosed, InvalidURL.
        """
        self._check_open()
        if isinstance(address, str):
            address = send_address(address)
        data = self._fmt.pack(obj)
        self._send(self.url, data, address)
        self._sent += 1
        self._bytes_sent += len(data)
        await self._pace()

    async def recv(self, *, timeout: float | None = None) -> Any:
        return (await self.recv_from(timeout=timeout))[0]

    async def recv_from(self, *, timeout: float | None = None) -> tuple[Any, Address]:
        """The next message and its source.

        Raises:
            Timeout, FrameTooLarge (dropped), ConnectionRefused (usable), ChannelClosed.
        """
        if self._closed:
            raise closed_error(self.url, self)
        if timeout == 0:
            self._drain(self._q)
        item = await self._q.get(timeout)
        self._received += 1
        return item

    async def _exchange(self, obj: Any, *, timeout: float | None) -> Any:
        """:meth:`request` in its turn: first discard what the peer sent before this request
        (a duplicated or late reply to an earlier one; see the blocking driver)."""
        if self._peer_addr is not None and not self._closed:
            stale = self._q.discard()
            for _ in range(STALE_MAX // QUEUE):  # what the event loop has not read yet too
                if not self._drain(self._q):
                    break
                stale += self._q.discard()
            self._stale += stale
        return await super()._exchange(obj, timeout=timeout)

    def close(self) -> None:
        if self._closed or handed_to_loop(self._loop, self.close):
            return
        self._closed = True
        self._q.close()
        if self._transport is not None:
            close_transport(self._transport)

    async def aclose(self) -> None:
        self.close()

    def statistics(self) -> ChannelStatistics:
        """The counters; ``dropped`` is the queue's overflow, the datagrams the kernel dropped
        at this socket, and the earlier replies ``request()`` discarded."""
        return self._statistics(self._q.nbytes, self._q.dropped + self._drops() + self._stale)


class _AioPeerChannel(PeerCore["AioUdpListener"], AioChannel):
    def __init__(self, listener: AioUdpListener, addr: Address) -> None:
        super().__init__(listener, addr)
        self._q = MessageQueue(self.url)
        self._q.channel = weakref.ref(self)
        self._timer: asyncio.TimerHandle | None = None  # wakes a recv when the peer is idle

    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        if self._closed or self._listener._transport is None:
            raise closed_error(self.url, self)
        data = self._listener._fmt.pack(obj)
        self._listener._send(self.url, data, self.addr)
        self._active = time.monotonic()
        self._sent += 1
        self._bytes_sent += len(data)
        await self._listener._pace()

    async def recv(self, *, timeout: float | None = None) -> Any:
        q = self._q
        if not (q.items or q.closed):
            now = time.monotonic()
            deadline = None if timeout is None else now + timeout
            while not (q.items or q.closed):
                end = self._idle_end(deadline)
                if end is not None:
                    if end <= now:  # idle: unless the kernel holds a datagram from the peer
                        if self._listener._drain(q):
                            break
                        raise self._end()
                    if self._timer is None:  # it wakes this wait
                        loop = asyncio.get_running_loop()
                        self._timer = loop.call_later(end - now, self._idle_check)
                if timeout == 0:  # what is there now: in the socket too
                    if self._listener._drain(q):
                        break
                    raise q.timed_out(timeout)
                if not await q.wait(None if deadline is None else deadline - now):
                    raise q.timed_out(timeout)
                now = time.monotonic()
        msg, _ = q.take()
        self._received += 1
        return msg

    def _idle_check(self) -> None:
        """The timer: wake the waiting recv once the peer has been idle for ``idle_timeout``
        (it ends the channel), or wait on for what activity added. One timer per channel, set
        again when it fires rather than at each message; it stops when no recv waits."""
        self._timer = None
        if self._q.waiter is None or self._closed or self._listener.idle_timeout is None:
            return
        left = self._active + self._listener.idle_timeout - time.monotonic()
        if left > 0:
            self._timer = asyncio.get_running_loop().call_later(left, self._idle_check)
        else:
            self._q.wake()

    def close(self) -> None:
        if self._closed or handed_to_loop(self._listener._loop, self.close):
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._q.close()
        self._listener._forget(self)

    async def aclose(self) -> None:
        self.close()

    def statistics(self) -> ChannelStatistics:
        """The counters; ``dropped`` is this peer's queue overflow plus the datagrams the
        kernel dropped at the listener's socket (it does not say from which peer)."""
        return self._statistics(self._q.nbytes, self._q.dropped + self._listener._drops())


class AioUdpListener(_Endpoint, ListenerCore[_AioPeerChannel], AioListener):
    """One bound socket; a channel per peer address (see the blocking listener)."""

    def __init__(
        self,
        options: ChannelOptions,
        url: str,
        family: socket.AddressFamily,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        max_peers: int | None = DEFAULT_MAX_PEERS,
    ) -> None:
        super().__init__(options, url, family, idle_timeout, max_peers)
        self._transport: asyncio.DatagramTransport | None = None
        self._sock: socket.socket | None = None
        self._new: AcceptQueue[_AioPeerChannel] = AcceptQueue("no new peer at")

    def _new_peer(self, addr: Address) -> _AioPeerChannel:
        return _AioPeerChannel(self, addr)

    def _wake_peer(self, ch: _AioPeerChannel) -> None:
        ch._q.wake()

    def _datagram(self, data: bytes, addr: Address) -> None:
        ch = self._peers.get(addr)
        if ch is None:
            ch = self._admit(addr, self._new.qsize())
            if ch is None:
                return
            self._new.put(ch)
        else:
            ch._active = time.monotonic()
        ch._bytes_received += len(data)
        ch._q.put_datagram(self._fmt, data, addr)

    def _error(self, exc: Exception) -> None:
        self._sent_error(exc)  # else an ICMP error for a reply to a peer that left: ignored

    def _lost(self) -> None:
        for ch in list(self._peers.values()):
            ch._q.wake()

    async def accept(self, *, timeout: float | None = None) -> AioChannel:
        """A channel for the next new peer.

        Raises:
            Timeout, ChannelClosed.
        """
        return await self._new.get(self.url, timeout)

    def _forget(self, ch: _AioPeerChannel) -> None:
        if self._release(ch) and self._transport is not None:
            close_transport(self._transport)

    def close(self) -> None:
        if self._closed or handed_to_loop(self._loop, self.close):
            return
        self._closed = True
        self._new.close()  # closes the peers nobody accepted
        if self._stop() and self._transport is not None:
            close_transport(self._transport)


def _sendto(t: asyncio.DatagramTransport, sock: socket.socket | None, data: Any, addr: Any) -> None:
    """``transport.sendto``, except for empty datagrams, which asyncio silently skips.

    Raises:
        OSError: an empty datagram refused by the socket.
    """
    if len(data) or sock is None:
        t.sendto(data, addr)
        return
    try:
        if addr is None:
            sock.send(b"")
        else:
            sock.sendto(b"", addr)
    except BlockingIOError:
        pass  # a full buffer loses a datagram, as UDP may


async def connect(
    endpoint: Endpoint, options: ChannelOptions, *, bind: str | None = None, **kw: Any
) -> AioUdpChannel:
    """Connected mode, as :func:`ipcwire.udp.blocking.connect`.

    Raises:
        InvalidURL, ConfigurationError, AddressInUse, PermissionDenied.
    """
    addr, local = connect_addresses(endpoint, bind, kw)
    sock = bind_socket(local, endpoint.url)
    try:
        connect_socket(sock, addr, addr.url())
        ch = AioUdpChannel(options, addr.url(), sock.family, (addr.host, addr.port))
        await ch._open(sock)
    except BaseException:
        sock.close()
        raise
    return ch


async def listen(endpoint: Endpoint, options: ChannelOptions, **kw: Any) -> AioUdpListener:
    """Bind and accept per-peer channels, as :func:`ipcwire.udp.blocking.listen`, with
    ``idle_timeout=300.0`` as there: a channel whose peer sent nothing and was sent nothing
    for that long ends (``recv`` raises EndOfChannel) and the listener forgets the peer; and
    ``max_peers=1024``: a new peer past it ends the channel of the one silent longest.

    Raises:
        AddressInUse, PermissionDenied, InvalidURL.
        ConfigurationError: ``idle_timeout`` not a finite number over 0 or None;
            ``max_peers`` not a whole number of at least 1 or None; unknown options.
    """
    max_peers = max_peers_option(endpoint, kw)
    idle_timeout = idle_timeout_option(endpoint, kw)
    sock, bound = bind_endpoint(endpoint, endpoint.url)
    try:
        listener = AioUdpListener(options, bound, sock.family, idle_timeout, max_peers)
        await listener._open(sock)
    except BaseException:
        sock.close()
        raise
    return listener


async def bind(url: str = "udp://127.0.0.1:0", **options: Any) -> AioUdpChannel:
    """An unconnected socket (``recv_from``/``send_to``), as :func:`ipcwire.udp.bind`.

    Raises:
        AddressInUse, PermissionDenied, InvalidURL.
        ConfigurationError: bad or unknown options.
    """
    endpoint = parse_url(url)
    kw = dict(options)
    opts = ChannelOptions.build(endpoint, kw)
    reject_unknown(kw, endpoint, ())
    sock, bound = bind_endpoint(endpoint, url)
    try:
        ch = AioUdpChannel(opts, bound, sock.family)
        await ch._open(sock)
    except BaseException:
        sock.close()
        raise
    return ch


async def pair(**options: Any) -> tuple[AioUdpChannel, AioUdpChannel]:
    """Two asyncio UDP channels on loopback, each connected to the other.

    Raises:
        ConfigurationError: bad options.
    """
    out = []
    for s, p in connected_pair():
        ch = AioUdpChannel(options_for(p.url(), options), p.url(), s.family, (p.host, p.port))
        await ch._open(s)
        out.append(ch)
    return out[0], out[1]

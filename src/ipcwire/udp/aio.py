"""``udp:`` asyncio driver: the blocking driver's modes on ``loop.create_datagram_endpoint``.

Datagrams arrive whether or not anyone is receiving, so each channel queues at most
``QUEUE`` messages; more are dropped and counted in ``statistics().dropped`` (UDP has no way to
slow the sender down).
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections import deque
from typing import Any, Final

from ipcwire._core.url import Endpoint, parse_url
from ipcwire._oserror import translate
from ipcwire.aio.channel import AcceptQueue, AioChannel, AioListener
from ipcwire.channel import ChannelStatistics, PeerInfo
from ipcwire.errors import (
    ChannelClosed,
    ConnectionRefused,
    IpcwireError,
    LocalProtocolError,
    Timeout,
)
from ipcwire.options import ChannelOptions, reject_unknown
from ipcwire.udp._socket import DatagramFormat, UdpAddress, bind_socket, resolve

__all__ = ["AioUdpChannel", "AioUdpListener", "connect", "listen"]

QUEUE: Final = 4096
Address = tuple[str, int]


def _fmt_addr(addr: Any) -> str:
    host, port = addr[0], addr[1]
    return f"udp://[{host}]:{port}" if ":" in host else f"udp://{host}:{port}"


class _Queue:
    """Messages (or queued errors) waiting for ``recv``; bounded, with a drop count."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.items: deque[tuple[Any, Address] | IpcwireError] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.dropped = 0
        self.closed = False

    def put(self, item: tuple[Any, Address] | IpcwireError) -> None:
        if len(self.items) >= QUEUE and not isinstance(item, IpcwireError):
            self.dropped += 1
            return
        self.items.append(item)
        self.wake()

    def wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def get(self, timeout: float | None) -> tuple[Any, Address]:
        while True:
            if self.closed:
                raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
            if self.items:
                item = self.items.popleft()
                if isinstance(item, IpcwireError):
                    raise item
                return item
            if timeout == 0:
                raise Timeout(f"no message from {self.url} yet", endpoint=self.url)
            if self.waiter is not None:
                raise LocalProtocolError(f"another task is already receiving on {self.url}")
            fut = self.waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await fut
            except TimeoutError:
                raise Timeout(
                    f"no message from {self.url} within {timeout} s", endpoint=self.url
                ) from None
            finally:
                self.waiter = None


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: AioUdpChannel | AioUdpListener) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner._datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        self.owner._error(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._lost()


def _unpack(fmt: DatagramFormat, data: bytes, addr: Address) -> list[Any] | IpcwireError:
    if len(data) > fmt.max_frame:
        return fmt.too_large(len(data), _fmt_addr(addr))
    try:
        return fmt.unpack(memoryview(data))
    except IpcwireError as exc:
        return exc


class AioUdpChannel(AioChannel):
    """A UDP socket as an asyncio channel (connected, or unconnected with send_to)."""

    def __init__(self, options: ChannelOptions, url: str, family: socket.AddressFamily) -> None:
        self.url = url
        self._fmt = DatagramFormat(options, family)
        self._q = _Queue(url)
        self._transport: asyncio.DatagramTransport | None = None
        self._sock: socket.socket | None = None
        self._peer_addr: Address | None = None
        self._closed = False
        self._sent = self._received = self._bytes_sent = self._bytes_received = 0

    def _datagram(self, data: bytes, addr: Address) -> None:
        self._bytes_received += len(data)
        got = _unpack(self._fmt, data, addr)
        if isinstance(got, IpcwireError):
            self._q.put(got)
            return
        for msg in got:
            self._q.put((msg, addr))

    def _error(self, exc: Exception) -> None:
        if isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED:
            self._q.put(
                ConnectionRefused(
                    f"nothing listens at {self.url}: a datagram sent there was refused (ICMP "
                    f"port unreachable); start the receiver. The channel stays usable",
                    endpoint=self.url,
                )
            )
        elif isinstance(exc, OSError):
            self._q.put(translate(exc, self.url, "receiving from"))

    def _lost(self) -> None:
        self._q.wake()

    @property
    def local_address(self) -> Address:
        """The (host, port) this socket is bound to."""
        assert self._transport is not None
        addr = self._transport.get_extra_info("sockname")
        return (addr[0], addr[1])

    @property
    def local_url(self) -> str:
        """``udp://host:port`` of this socket."""
        return _fmt_addr(self.local_address)

    def _check_open(self) -> asyncio.DatagramTransport:
        if self._closed or self._transport is None:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        return self._transport

    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        t = self._check_open()
        if self._peer_addr is None:
            raise LocalProtocolError(
                f"{self.url} is not connected to one peer; use send_to(obj, address)",
                endpoint=self.url,
            )
        data = self._fmt.pack(obj)
        _sendto(t, self._sock, data, None)
        self._sent += 1
        self._bytes_sent += len(data)

    async def send_to(
        self, obj: Any, address: Address | str, *, timeout: float | None = None
    ) -> None:
        """Send one datagram to ``address`` (``(host, port)`` or ``udp://host:port``).

        Raises:
            FrameTooLarge, ChannelClosed, InvalidURL.
        """
        t = self._check_open()
        if isinstance(address, str):
            a = resolve(parse_url(address), listening=False)
            address = (a.host, a.port)
        data = self._fmt.pack(obj)
        _sendto(t, self._sock, data, address)
        self._sent += 1
        self._bytes_sent += len(data)

    async def recv(self, *, timeout: float | None = None) -> Any:
        return (await self.recv_from(timeout=timeout))[0]

    async def recv_from(self, *, timeout: float | None = None) -> tuple[Any, Address]:
        """The next message and its source.

        Raises:
            Timeout, FrameTooLarge (dropped), ConnectionRefused (usable), ChannelClosed.
        """
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        item = await self._q.get(timeout)
        self._received += 1
        return item

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._q.closed = True
        self._q.wake()
        if self._transport is not None:
            self._transport.close()

    async def aclose(self) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def peer(self) -> PeerInfo | None:
        return None if self._peer_addr is None else PeerInfo(address=_fmt_addr(self._peer_addr))

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            messages_sent=self._sent,
            messages_received=self._received,
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
            dropped=self._q.dropped,
        )


class _AioPeerChannel(AioChannel):
    def __init__(self, listener: AioUdpListener, addr: Address) -> None:
        self._listener = listener
        self.addr = addr
        self.url = f"{listener.url} <- {_fmt_addr(addr)}"
        self._q = _Queue(self.url)
        self._closed = False
        self._sent = self._received = self._bytes_sent = self._bytes_received = 0

    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        if self._closed or self._listener._transport is None:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        data = self._listener._fmt.pack(obj)
        _sendto(self._listener._transport, self._listener._sock, data, self.addr)
        self._sent += 1
        self._bytes_sent += len(data)

    async def recv(self, *, timeout: float | None = None) -> Any:
        msg, _ = await self._q.get(timeout)
        self._received += 1
        return msg

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._q.closed = True
        self._q.wake()
        self._listener._forget(self)

    async def aclose(self) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def peer(self) -> PeerInfo | None:
        return PeerInfo(address=_fmt_addr(self.addr))

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            self._sent, self._received, self._bytes_sent, self._bytes_received,
            buffered_bytes=len(self._q.items), dropped=self._q.dropped,
        )  # fmt: skip


class AioUdpListener(AioListener):
    """One bound socket; a channel per peer address (see the blocking listener)."""

    def __init__(self, options: ChannelOptions, url: str, family: socket.AddressFamily) -> None:
        self.url = url
        self._fmt = DatagramFormat(options, family)
        self._transport: asyncio.DatagramTransport | None = None
        self._sock: socket.socket | None = None
        self._peers: dict[Address, _AioPeerChannel] = {}
        self._new: AcceptQueue[_AioPeerChannel] = AcceptQueue("no new peer at")
        self._closed = False
        self._users = 1
        self.dropped = 0

    def _datagram(self, data: bytes, addr: Address) -> None:
        ch = self._peers.get(addr)
        if ch is None:
            if self._closed or self._new.qsize() >= 128:
                self.dropped += 1
                return
            ch = self._peers[addr] = _AioPeerChannel(self, addr)
            self._users += 1
            self._new.put(ch)
        ch._bytes_received += len(data)
        got = _unpack(self._fmt, data, addr)
        if isinstance(got, IpcwireError):
            ch._q.put(got)
            return
        for msg in got:
            ch._q.put((msg, addr))

    def _error(self, exc: Exception) -> None:
        pass  # ICMP errors for replies to peers that left: nothing to do

    def _lost(self) -> None:
        for ch in list(self._peers.values()):
            ch._q.wake()

    @property
    def local_address(self) -> Address:
        """The (host, port) bound."""
        assert self._transport is not None
        addr = self._transport.get_extra_info("sockname")
        return (addr[0], addr[1])

    async def accept(self, *, timeout: float | None = None) -> AioChannel:
        """A channel for the next new peer.

        Raises:
            Timeout, ChannelClosed.
        """
        return await self._new.get(self.url, timeout)

    def _forget(self, ch: _AioPeerChannel) -> None:
        if self._peers.get(ch.addr) is ch:
            del self._peers[ch.addr]
            self._users -= 1
            if self._users == 0 and self._transport is not None:
                self._transport.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._new.close()
        self._users -= 1
        if self._users == 0 and self._transport is not None:
            self._transport.close()

    @property
    def closed(self) -> bool:
        return self._closed


async def _endpoint(sock: socket.socket, owner: AioUdpChannel | AioUdpListener) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(owner), sock=sock)
    owner._transport = transport
    owner._sock = sock


def _sendto(t: asyncio.DatagramTransport, sock: socket.socket | None, data: Any, addr: Any) -> None:
    """``transport.sendto``, except for empty datagrams, which asyncio silently skips."""
    if len(data) or sock is None:
        t.sendto(data, addr)
        return
    try:
        if addr is None:
            sock.send(b"")
        else:
            sock.sendto(b"", addr)
    except OSError:
        pass  # a full buffer loses a datagram, as UDP may


async def connect(
    endpoint: Endpoint, options: ChannelOptions, *, bind: str | None = None, **kw: Any
) -> AioUdpChannel:
    """Connected mode, as :func:`ipcwire.udp.blocking.connect`.

    Raises:
        InvalidURL, ConfigurationError, AddressInUse, PermissionDenied.
    """
    kw.pop("timeout", None)
    reject_unknown(kw, endpoint, ("timeout", "bind"))
    addr = resolve(endpoint, listening=False)
    if bind is not None:
        local = resolve(parse_url(bind), listening=True)
    else:
        loop_host = addr.host in ("127.0.0.1", "::1") or addr.host.startswith("127.")
        any_host = "::" if addr.family == socket.AF_INET6 else "0.0.0.0"  # noqa: S104
        lo = "::1" if ":" in addr.host else "127.0.0.1"
        local = UdpAddress(lo if loop_host else any_host, 0)
    sock = bind_socket(local, endpoint.url)
    try:
        sock.connect((addr.host, addr.port))
        ch = AioUdpChannel(options, addr.url(), sock.family)
        ch._peer_addr = (addr.host, addr.port)
        await _endpoint(sock, ch)
    except BaseException:
        sock.close()
        raise
    return ch


async def listen(endpoint: Endpoint, options: ChannelOptions, **kw: Any) -> AioUdpListener:
    """Bind and accept per-peer channels, as :func:`ipcwire.udp.blocking.listen`.

    Raises:
        AddressInUse, PermissionDenied, InvalidURL, ConfigurationError.
    """
    reject_unknown(kw, endpoint, ())
    addr = resolve(endpoint, listening=True)
    sock = bind_socket(addr, endpoint.url)
    host, port = sock.getsockname()[:2]
    try:
        listener = AioUdpListener(options, UdpAddress(host, port).url(), sock.family)
        await _endpoint(sock, listener)
    except BaseException:
        sock.close()
        raise
    return listener


async def bind(url: str = "udp://127.0.0.1:0", **options: Any) -> AioUdpChannel:
    """An unconnected socket (``recv_from``/``send_to``), as :func:`ipcwire.udp.bind`.

    Raises:
        AddressInUse, PermissionDenied, InvalidURL, ConfigurationError.
    """
    endpoint = parse_url(url)
    opts = ChannelOptions.build(endpoint, dict(options))
    addr = resolve(endpoint, listening=True)
    sock = bind_socket(addr, url)
    host, port = sock.getsockname()[:2]
    try:
        ch = AioUdpChannel(opts, UdpAddress(host, port).url(), sock.family)
        await _endpoint(sock, ch)
    except BaseException:
        sock.close()
        raise
    return ch


async def pair(**options: Any) -> tuple[AioUdpChannel, AioUdpChannel]:
    """Two asyncio UDP channels on loopback, each connected to the other.

    Raises:
        ConfigurationError: bad options.
    """
    socks = [bind_socket(UdpAddress("127.0.0.1", 0), "udp://127.0.0.1:0") for _ in range(2)]
    socks[0].connect(socks[1].getsockname())
    socks[1].connect(socks[0].getsockname())
    out = []
    for s in socks:
        host, port = s.getpeername()[:2]
        url = UdpAddress(host, port).url()
        ch = AioUdpChannel(ChannelOptions.build(parse_url(url), dict(options)), url, s.family)
        ch._peer_addr = (host, port)
        await _endpoint(s, ch)
        out.append(ch)
    return out[0], out[1]

"""Plain UDP sockets, as ``ipcwire bench`` baselines: ``raw/udp`` and ``raw/udp/asyncio``
(the ids ipcwire's udp rows compare with).

Measured like ipcwire's ``udp://127.0.0.1:0``: side A binds a loopback port and answers each
datagram to the address it came from; side B connects a socket to it. One datagram per
message, no framing. What a careful programmer writes by hand: blocking ``recvfrom_into`` one
reusable buffer and ``sendto`` (side A), ``send`` and ``recv_into`` on the connected socket
(side B); the asyncio flavour is ``loop.create_datagram_endpoint`` with a protocol that queues
datagrams for ``recv``. Round trips only (UDP is not reliable, so throughput is not measured).
Imported by the bench when listed in ``CONTENDER_MODULES``.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from typing import Any, Final

from ipcwire.aio._read_size import bound_reads
from ipcwire.bench.contender import Contender, Task, register_contender
from ipcwire.udp._socket import READ_SIZE

__all__ = ["CONTENDERS"]

_MAX: Final = 65507  # the largest IPv4 UDP payload
_QUEUE: Final = 4096  # datagrams an asyncio receiver queues before dropping


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def _peer(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


# -- blocking --------------------------------------------------------------------------------
class _Server:
    """Side A: one bound socket; replies go to where the last datagram came from."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self.address = _address(self._sock)
        self._buf = bytearray(_MAX + 1)
        self._view = memoryview(self._buf)
        self._from: Any = None

    def accept(self) -> _Server:
        return self

    def recv(self) -> bytes:
        n, self._from = self._sock.recvfrom_into(self._buf)
        return bytes(self._view[:n])

    def send(self, message: bytes) -> None:
        self._sock.sendto(message, self._from)

    def close(self) -> None:
        self._sock.close()


class _Client:
    """Side B: a socket connected to side A."""

    def __init__(self, address: str) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.connect(_peer(address))
        self._buf = bytearray(_MAX + 1)
        self._view = memoryview(self._buf)
        self.send = self._sock.send

    def recv(self) -> bytes:
        n = self._sock.recv_into(self._buf)
        return bytes(self._view[:n])

    def close(self) -> None:
        self._sock.close()


def side_a(task: Task, shared: Any) -> _Server:
    return _Server()


def side_b(task: Task, address: str, shared: Any) -> _Client:
    return _Client(address)


# -- asyncio ---------------------------------------------------------------------------------
class _Proto(asyncio.DatagramProtocol):
    """Queues datagrams (and their sources) for ``recv``."""

    def __init__(self) -> None:
        self.items: deque[tuple[bytes, Any]] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.lost = False

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(self.items) < _QUEUE:
            self.items.append((data, addr))
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)


class _AioLink:
    """One end: ``send`` is one ``sendto`` (to the connected peer, or the last source)."""

    def __init__(
        self, transport: asyncio.DatagramTransport, proto: _Proto, connected: bool
    ) -> None:
        bound_reads(transport, READ_SIZE)  # as ipcwire's: no mmap per datagram (_read_size)
        self._proto = proto
        self._transport = transport
        self._connected = connected
        self._from: Any = None
        self.address = _address(self._transport.get_extra_info("socket"))

    async def accept(self) -> _AioLink:
        return self

    async def send(self, message: bytes) -> None:
        self._transport.sendto(message, None if self._connected else self._from)

    async def recv(self) -> bytes:
        p = self._proto
        while not p.items:
            if p.lost:
                raise EOFError("the socket was closed")
            p.waiter = asyncio.get_running_loop().create_future()
            await p.waiter
            p.waiter = None
        data, self._from = p.items.popleft()
        return data

    async def aclose(self) -> None:
        self._transport.close()


async def aio_side_a(task: Task, shared: Any) -> _AioLink:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_Proto, local_addr=("127.0.0.1", 0))
    return _AioLink(transport, proto, connected=False)


async def aio_side_b(task: Task, address: str, shared: Any) -> _AioLink:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        _Proto, local_addr=("127.0.0.1", 0), remote_addr=_peer(address)
    )
    return _AioLink(transport, proto, connected=True)


_FRAMING: Final = "one datagram per message"

CONTENDERS: Final = (
    Contender(
        id="raw/udp",
        title="raw Python, UDP loopback",
        group="baseline",
        mechanism="udp",
        api="blocking",
        side_a=side_a,
        side_b=side_b,
        framing=_FRAMING,
        overhead=0,
        kinds=("round_trip",),
        max_size=_MAX,
        note="blocking sockets: recvfrom_into one buffer + sendto; connected send + recv_into",
    ),
    Contender(
        id="raw/udp/asyncio",
        title="raw Python, UDP loopback, asyncio",
        group="baseline",
        mechanism="udp",
        api="asyncio",
        side_a=aio_side_a,
        side_b=aio_side_b,
        framing=_FRAMING,
        overhead=0,
        kinds=("round_trip",),
        max_size=_MAX,
        baseline="raw/udp",
        note="loop.create_datagram_endpoint with a protocol that queues datagrams",
    ),
)

for _c in CONTENDERS:
    register_contender(_c)

"""Raw-Python asyncio baselines: a minimal length-prefixed ``asyncio.Protocol``, no ipcwire.

``send`` is one ``transport.write`` of ``length + payload`` (waiting only while the transport
asks to pause writing); ``data_received`` parses every complete frame into a queue that
``recv`` pops, pausing reading while too much is queued. This is what a careful programmer
writes by hand for asyncio, so ipcwire's asyncio rows are compared with it.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections import deque
from collections.abc import Callable
from typing import Any, Final, cast

from ipcwire.aio._read_size import bound_reads
from ipcwire.bench.contender import Contender, Task

__all__ = [
    "RAW_AIO_TCP",
    "RAW_AIO_TCP_BATCHED",
    "RAW_AIO_UNIX",
    "RAW_AIO_UNIX_BATCHED",
    "FrameReader",
    "RawAioLink",
    "WriteFlow",
]

LEN: Final = struct.Struct(">I")
PAUSE_AT: Final = 1024  # queued messages before reading pauses


class FrameReader(asyncio.Protocol):
    """The reading half: every complete frame of each read goes into ``frames``; reading
    pauses while more than :data:`PAUSE_AT` frames wait. Also the protocol of a read pipe."""

    def __init__(self) -> None:
        self.transport: asyncio.BaseTransport | None = None
        self.buf = bytearray()
        self.frames: deque[bytes] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.read_paused = False
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        bound_reads(transport)  # as ipcwire's do: no mmap per read (ipcwire.aio._read_size)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        end = len(buf)
        frames = self.frames
        while end - pos >= 4:
            (n,) = LEN.unpack_from(buf, pos)
            if end - pos - 4 < n:
                break
            frames.append(bytes(buf[pos + 4 : pos + 4 + n]))
            pos += 4 + n
        del buf[:pos]
        if len(frames) > PAUSE_AT and isinstance(self.transport, asyncio.ReadTransport):
            self.read_paused = True
            self.transport.pause_reading()
        self._wake()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self._wake()


class WriteFlow(asyncio.BaseProtocol):
    """The writing half's flow control: ``write_paused`` while the transport asks, and a
    future to wait on. Also the protocol of a write pipe."""

    def __init__(self) -> None:
        self.write_paused = False
        self.lost = False
        self.drainer: asyncio.Future[None] | None = None

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        d = self.drainer
        if d is not None and not d.done():
            d.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.resume_writing()


class _Proto(FrameReader, WriteFlow):
    """A socket: both halves on one protocol."""

    def __init__(self) -> None:
        FrameReader.__init__(self)
        WriteFlow.__init__(self)

    def connection_lost(self, exc: Exception | None) -> None:
        FrameReader.connection_lost(self, exc)
        WriteFlow.connection_lost(self, exc)


class RawAioLink:
    """A length-prefixed message link: frames from a :class:`FrameReader`, written to
    ``write`` under a :class:`WriteFlow`'s flow control (one protocol for a socket, two for a
    pair of pipes)."""

    def __init__(
        self,
        reader: FrameReader,
        flow: WriteFlow | None = None,
        write: Callable[[bytes], object] | None = None,
    ) -> None:
        self._in = reader
        self._out = flow if flow is not None else cast("WriteFlow", reader)
        if write is None:
            assert isinstance(reader.transport, asyncio.WriteTransport)
            write = reader.transport.write
        self._write = write

    async def _drain(self) -> None:
        out = self._out
        while out.write_paused and not out.lost:
            out.drainer = asyncio.get_running_loop().create_future()
            await out.drainer

    async def send(self, message: bytes) -> None:
        self._write(LEN.pack(len(message)) + message)
        if self._out.write_paused:
            await self._drain()

    async def send_many(self, messages: list[bytes]) -> None:
        self._write(b"".join([LEN.pack(len(m)) + m for m in messages]))
        if self._out.write_paused:
            await self._drain()

    async def _wait(self) -> None:
        r = self._in
        while not r.frames:
            if r.eof:
                raise EOFError("the peer closed the connection")
            r.waiter = asyncio.get_running_loop().create_future()
            await r.waiter
            r.waiter = None

    def _resume(self) -> None:
        r = self._in
        if r.read_paused and len(r.frames) < PAUSE_AT // 2:
            r.read_paused = False
            if isinstance(r.transport, asyncio.ReadTransport):
                r.transport.resume_reading()

    async def recv(self) -> bytes:
        r = self._in
        if not r.frames:
            await self._wait()
        frame = r.frames.popleft()
        if r.read_paused:
            self._resume()
        return frame

    async def recv_many(self) -> list[bytes]:
        r = self._in
        if not r.frames:
            await self._wait()
        out = list(r.frames)
        r.frames.clear()
        if r.read_paused:
            self._resume()
        return out

    async def aclose(self) -> None:
        if self._in.transport is not None:
            self._in.transport.close()


class _Acceptor:
    def __init__(self, server: asyncio.Server, address: str, path: str | None) -> None:
        self._server = server
        self.address = address
        self._path = path
        self._accepted: asyncio.Future[_Proto] = asyncio.get_running_loop().create_future()

    def factory(self) -> _Proto:
        proto = _Proto()
        if not self._accepted.done():
            self._accepted.set_result(proto)
        return proto

    async def accept(self) -> RawAioLink:
        async with asyncio.timeout(30.0):
            proto = await self._accepted
        await asyncio.sleep(0)  # let connection_made run
        return RawAioLink(proto)

    async def aclose(self) -> None:
        self._server.close()
        await self._server.wait_closed()
        if self._path is not None:
            try:
                os.unlink(self._path)
            except OSError:
                pass


class _Holder:
    acceptor: _Acceptor | None = None


async def unix_side_a(task: Task, shared: Any) -> _Acceptor:
    path = os.path.join(task.workdir, f"rawaio{task.serial}.sock")
    holder = _Holder()

    def factory() -> _Proto:
        assert holder.acceptor is not None
        return holder.acceptor.factory()

    server = await asyncio.get_running_loop().create_unix_server(factory, path)
    holder.acceptor = _Acceptor(server, path, path)
    return holder.acceptor


async def unix_side_b(task: Task, address: str, shared: Any) -> RawAioLink:
    _, proto = await asyncio.get_running_loop().create_unix_connection(_Proto, address)
    return RawAioLink(proto)


async def tcp_side_a(task: Task, shared: Any) -> _Acceptor:
    holder = _Holder()

    def factory() -> _Proto:
        assert holder.acceptor is not None
        return holder.acceptor.factory()

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    holder.acceptor = _Acceptor(server, f"{host}:{port}", None)
    return holder.acceptor


async def tcp_side_b(task: Task, address: str, shared: Any) -> RawAioLink:
    host, _, port = address.rpartition(":")
    _, proto = await asyncio.get_running_loop().create_connection(_Proto, host, int(port))
    return RawAioLink(proto)


def _pair(scheme: str, title: str, a: Any, b: Any) -> tuple[Contender, Contender]:
    note = "asyncio.Protocol: one transport.write per message, every frame parsed per read"
    ident = f"raw/{scheme}/asyncio"
    single = Contender(
        id=ident,
        title=f"raw Python, {title}, asyncio",
        group="baseline",
        mechanism=scheme,
        api="asyncio",
        side_a=a,
        side_b=b,
        baseline=f"raw/{scheme}",  # so "vs raw" shows what asyncio itself costs here
        note=note + ("; asyncio sets TCP_NODELAY" if scheme == "tcp" else ""),
    )
    batched = Contender(
        id=ident + "/batched",
        title=f"raw Python, {title}, asyncio, batched",
        group="baseline",
        mechanism=scheme,
        api="asyncio",
        side_a=a,
        side_b=b,
        kinds=("throughput",),
        batched=True,
        baseline=ident,
        note="frames joined into one transport.write per batch",
    )
    return single, batched


RAW_AIO_UNIX, RAW_AIO_UNIX_BATCHED = _pair("unix", "Unix socket", unix_side_a, unix_side_b)
RAW_AIO_TCP, RAW_AIO_TCP_BATCHED = _pair("tcp", "TCP loopback", tcp_side_a, tcp_side_b)

"""Raw-Python baselines: the same system calls ipcwire makes, with no ipcwire.

A minimal length-prefixed loop over a plain blocking socket: ``send`` is one ``sendall`` of
``4-byte big-endian length + payload``; ``recv`` reads whatever the kernel has into one
reusable buffer with ``recv_into`` and returns each complete frame as ``bytes``. This is what
a careful programmer writes by hand in thirty lines, so the ratio to it is ipcwire's cost.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable
from typing import Any, Final

from ipcwire.bench.contender import Contender, Task

__all__ = ["RAW_TCP", "RAW_TCP_BATCHED", "RAW_UNIX", "RAW_UNIX_BATCHED", "RawLink"]

_LEN: Final = struct.Struct(">I")
_BUFSIZE: Final = 256 * 1024


class FramedLink:
    """Length-prefixed messages over any byte stream: ``_readinto(view) -> int`` reads into the
    buffer (0: the peer closed), ``_writeall(data)`` writes everything. The socket and the pipe
    baselines differ only in those two."""

    __slots__ = ("_buf", "_end", "_readinto", "_start", "_view", "_writeall")

    def __init__(self, readinto: Callable[[memoryview], int], writeall: Callable[[bytes], Any]):
        self._readinto = readinto
        self._writeall = writeall
        self._buf = bytearray(_BUFSIZE)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0

    def send(self, message: bytes) -> None:
        self._writeall(_LEN.pack(len(message)) + message)

    def send_many(self, messages: list[bytes]) -> None:
        self._writeall(b"".join([_LEN.pack(len(m)) + m for m in messages]))

    def _frame(self) -> bytes | None:
        start = self._start
        if self._end - start >= 4:
            (n,) = _LEN.unpack_from(self._buf, start)
            stop = start + 4 + n
            if stop <= self._end:
                self._start = stop
                return bytes(self._view[start + 4 : stop])
        return None

    def _read(self) -> None:
        pending = self._end - self._start
        if self._start:
            if pending:
                self._view[:pending] = bytes(self._view[self._start : self._end])
            self._start, self._end = 0, pending
        need = _LEN.unpack_from(self._buf, 0)[0] + 4 if pending >= 4 else 4
        if need > len(self._buf) - 65536:
            grown = bytearray(max(need + 65536, 2 * len(self._buf)))
            grown[:pending] = self._view[:pending]
            self._buf = grown
            self._view = memoryview(grown)
        n = self._readinto(self._view[self._end :])
        if n == 0:
            raise EOFError("the peer closed the connection")
        self._end += n

    def recv(self) -> bytes:
        frame = self._frame()
        while frame is None:
            self._read()
            frame = self._frame()
        return frame

    def recv_many(self) -> list[bytes]:
        out = [self.recv()]
        frame = self._frame()
        while frame is not None:
            out.append(frame)
            frame = self._frame()
        return out


class RawLink(FramedLink):
    """A length-prefixed message link over a connected stream socket."""

    __slots__ = ("_sock",)

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self._sock = sock
        super().__init__(sock.recv_into, sock.sendall)

    def close(self) -> None:
        self._sock.close()


class RawAcceptor:
    """A listening socket; ``accept`` returns a :class:`RawLink`."""

    def __init__(self, sock: socket.socket, address: str, path: str | None = None) -> None:
        self._sock = sock
        self.address = address
        self._path = path

    def accept(self) -> RawLink:
        self._sock.settimeout(30.0)
        conn, _ = self._sock.accept()
        if conn.family != socket.AF_UNIX:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return RawLink(conn)

    def close(self) -> None:
        self._sock.close()
        if self._path is not None:
            try:
                os.unlink(self._path)
            except OSError:
                pass


def unix_side_a(task: Task, shared: Any) -> RawAcceptor:
    path = os.path.join(task.workdir, f"raw{task.serial}.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(1)
    return RawAcceptor(sock, path, path)


def unix_side_b(task: Task, address: str, shared: Any) -> RawLink:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(address)
    return RawLink(sock)


def tcp_side_a(task: Task, shared: Any) -> RawAcceptor:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    host, port = sock.getsockname()
    return RawAcceptor(sock, f"{host}:{port}")


def tcp_side_b(task: Task, address: str, shared: Any) -> RawLink:
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=10.0)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return RawLink(sock)


_NOTE: Final = "hand-written socket loop: one sendall per message, buffered recv_into"

RAW_UNIX: Final = Contender(
    id="raw/unix",
    title="raw Python, Unix socket",
    group="baseline",
    mechanism="unix",
    api="blocking",
    side_a=unix_side_a,
    side_b=unix_side_b,
    note=_NOTE,
)
RAW_UNIX_BATCHED: Final = Contender(
    id="raw/unix/batched",
    title="raw Python, Unix socket, batched",
    group="baseline",
    mechanism="unix",
    api="blocking",
    side_a=unix_side_a,
    side_b=unix_side_b,
    kinds=("throughput",),
    batched=True,
    baseline="raw/unix",
    note="frames joined into one sendall per batch; every complete frame parsed per read",
)
RAW_TCP: Final = Contender(
    id="raw/tcp",
    title="raw Python, TCP loopback",
    group="baseline",
    mechanism="tcp",
    api="blocking",
    side_a=tcp_side_a,
    side_b=tcp_side_b,
    note=_NOTE + "; TCP_NODELAY",
)
RAW_TCP_BATCHED: Final = Contender(
    id="raw/tcp/batched",
    title="raw Python, TCP loopback, batched",
    group="baseline",
    mechanism="tcp",
    api="blocking",
    side_a=tcp_side_a,
    side_b=tcp_side_b,
    kinds=("throughput",),
    batched=True,
    baseline="raw/tcp",
    note="frames joined into one sendall per batch; TCP_NODELAY",
)

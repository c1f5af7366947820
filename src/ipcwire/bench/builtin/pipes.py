"""Anonymous pipes: ipcwire's ``pipe`` mechanism and its raw ``os.pipe`` baseline.

Pipes have no address, so these contenders cannot go through ``ipcwire.listen``/``connect``.
For each measurement side A makes a fresh pair of pipes (one per direction) and hands side B
its two fds over a short-lived Unix socket (``SCM_RIGHTS``), which is how unrelated processes
share a pipe; then both sides use their ends. The raw baseline moves length-prefixed messages
with ``os.write`` (looping over partial writes) and ``os.readv`` into one reusable buffer: the
same system calls, no ipcwire, on pipes of the same size as ipcwire's (:func:`raw_pipe`: grown
to 1 MiB with ``F_SETPIPE_SZ`` as ipcwire's are, so the ratio compares the code, not the
buffers; ipcwire's bigger default pipe is a real advantage over a plain ``os.pipe()``, which
docs/benchmarks.md states, but not one the ratio counts). Its asyncio flavour
(:class:`RawAioPipeLink`, also used by the ``raw/spawn`` and ``raw/fifo`` asyncio baselines)
is ``loop.connect_read_pipe`` and ``connect_write_pipe`` with a minimal length-prefix
protocol: one ``transport.write`` per message, every frame parsed per read.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
from collections.abc import Callable
from typing import Any, Final

from ipcwire.bench.builtin.raw import FramedLink
from ipcwire.bench.builtin.raw_aio import FrameReader, RawAioLink, WriteFlow
from ipcwire.bench.contender import Contender, Task

__all__ = [
    "RAW_AIO_NOTE",
    "RawAioPipeLink",
    "RawPipeLink",
    "grow_like_ipcwire",
    "pipe_contenders",
    "raw_pipe",
]


def grow_like_ipcwire(fd: int) -> None:
    """Ask for the pipe buffer ipcwire asks for (``F_SETPIPE_SZ``, Linux; best effort, as
    ipcwire does), so a raw baseline's pipe or FIFO holds as much as ipcwire's."""
    from ipcwire.pipe._fdutil import PIPE_SIZE

    setsz = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsz is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, setsz, PIPE_SIZE)


def raw_pipe() -> tuple[int, int]:
    """``os.pipe()``, grown as ipcwire grows its pipes (:func:`grow_like_ipcwire`)."""
    r, w = os.pipe()
    grow_like_ipcwire(w)
    return r, w


# -- handing fds to side B ----------------------------------------------------------------------
class _FdHandoff:
    """Side A's acceptor: a Unix socket that gives the connecting process its fds."""

    def __init__(
        self,
        task: Task,
        theirs: tuple[int, int],
        tag: bytes,
        make_link: Callable[[], Any],
        release: Callable[[], None],
    ) -> None:
        self._path = os.path.join(task.workdir, f"pipe{task.serial}.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self._path)
        self._sock.listen(1)
        self._theirs = theirs
        self._tag = tag
        self._make_link = make_link
        self._release = release  # closes this process's copies of B's fds (once)
        self._released = False
        self.address = self._path

    def _hand_over(self) -> None:
        self._sock.settimeout(30.0)
        conn, _ = self._sock.accept()
        with conn:
            socket.send_fds(conn, [self._tag], list(self._theirs))
            conn.recv(1)  # B has them: our copies can go
        self._release_theirs()

    def _release_theirs(self) -> None:
        if not self._released:
            self._released = True
            self._release()

    def accept(self) -> Any:
        self._hand_over()
        return self._make_link()

    def close(self) -> None:
        self._sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self._path)
        self._release_theirs()


class _AioFdHandoff(_FdHandoff):
    async def accept(self) -> Any:
        self._hand_over()
        return await self._make_link()

    async def aclose(self) -> None:
        self.close()


def _receive_fds(address: str) -> tuple[bytes, list[int]]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30.0)
        s.connect(address)
        tag, fds, _, _ = socket.recv_fds(s, 64, 2)
        s.sendall(b"k")
    return tag, fds


# -- the raw baseline ------------------------------------------------------------------------------
class RawPipeLink(FramedLink):
    """Length-prefixed messages over a read fd and a write fd."""

    __slots__ = ("_rfd", "_wfd")

    def __init__(self, rfd: int, wfd: int) -> None:
        self._rfd = rfd
        self._wfd = wfd
        super().__init__(lambda view: os.readv(rfd, [view]), self._write_all)

    def _write_all(self, data: bytes) -> None:
        n = os.write(self._wfd, data)
        if n < len(data):
            view = memoryview(data)
            while n < len(data):
                n += os.write(self._wfd, view[n:])

    def close(self) -> None:
        for fd in (self._rfd, self._wfd):
            with contextlib.suppress(OSError):
                os.close(fd)


# -- the raw asyncio baseline -----------------------------------------------------------------
class _AioReader(FrameReader):
    """The read pipe's protocol: a pipe's end of file is the peer closing."""

    def eof_received(self) -> bool | None:
        self.eof = True
        self._wake()
        return None


class RawAioPipeLink(RawAioLink):
    """Length-prefixed messages over a read fd and a write fd, for asyncio (takes the fds)."""

    def __init__(
        self,
        reader: _AioReader,
        rtransport: asyncio.ReadTransport,
        writer: WriteFlow,
        wtransport: asyncio.WriteTransport,
    ) -> None:
        super().__init__(reader, writer, wtransport.write)
        self._rtransport = rtransport
        self._wtransport = wtransport

    @classmethod
    async def open(cls, rfd: int, wfd: int) -> RawAioPipeLink:
        loop = asyncio.get_running_loop()
        rt, reader = await loop.connect_read_pipe(_AioReader, os.fdopen(rfd, "rb", buffering=0))
        wt, writer = await loop.connect_write_pipe(WriteFlow, os.fdopen(wfd, "wb", buffering=0))
        return cls(reader, rt, writer, wt)

    async def aclose(self) -> None:
        self._wtransport.close()
        self._rtransport.close()
        await asyncio.sleep(0)  # let the transports' connection_lost run (they close the fds)


RAW_AIO_NOTE: Final = (
    "loop.connect_read_pipe / connect_write_pipe with a minimal protocol: one transport.write "
    "per message, every frame parsed per read"
)


def _closer(*fds: int) -> Callable[[], None]:
    def close() -> None:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    return close


def raw_side_a(task: Task, shared: Any) -> _FdHandoff:
    a_r, b_w = raw_pipe()
    b_r, a_w = raw_pipe()
    return _FdHandoff(task, (b_r, b_w), b"raw", lambda: RawPipeLink(a_r, a_w), _closer(b_r, b_w))


def raw_side_b(task: Task, address: str, shared: Any) -> RawPipeLink:
    _, fds = _receive_fds(address)
    return RawPipeLink(fds[0], fds[1])


async def raw_aside_a(task: Task, shared: Any) -> _AioFdHandoff:
    a_r, b_w = raw_pipe()
    b_r, a_w = raw_pipe()

    async def link() -> RawAioPipeLink:
        return await RawAioPipeLink.open(a_r, a_w)

    return _AioFdHandoff(task, (b_r, b_w), b"raw", link, _closer(b_r, b_w))


async def raw_aside_b(task: Task, address: str, shared: Any) -> RawAioPipeLink:
    _, fds = _receive_fds(address)
    return await RawAioPipeLink.open(fds[0], fds[1])


# -- ipcwire's pipe mechanism ------------------------------------------------------------------
def _ends() -> tuple[Any, Any]:
    from ipcwire.pipe import ends

    return ends()


def _end(fds: list[int], role: bytes) -> Any:
    from ipcwire.pipe import PipeEnd

    return PipeEnd(fds[0], fds[1], role=role.decode())


def ipcwire_side_a(task: Task, shared: Any) -> _FdHandoff:
    mine, theirs = _ends()
    return _FdHandoff(task, (theirs.rfd, theirs.wfd), theirs.role.encode(), mine.open, theirs.close)


def ipcwire_side_b(task: Task, address: str, shared: Any) -> Any:
    role, fds = _receive_fds(address)
    return _end(fds, role).open()


def _import_aio() -> None:
    # Importing ipcwire.pipe.aio first in a fresh process hits a circular import
    # (pipe.aio -> ipcwire.aio -> spawn.aio -> pipe.aio); importing ipcwire.aio first, as a
    # user of the asyncio API does, avoids it.
    import ipcwire.aio  # noqa: F401


async def ipcwire_aside_a(task: Task, shared: Any) -> _AioFdHandoff:
    _import_aio()
    mine, theirs = _ends()
    return _AioFdHandoff(
        task, (theirs.rfd, theirs.wfd), theirs.role.encode(), mine.aopen, theirs.close
    )


async def ipcwire_aside_b(task: Task, address: str, shared: Any) -> Any:
    _import_aio()
    role, fds = _receive_fds(address)
    return await _end(fds, role).aopen()


def _row(ident: str, title: str, group: str, api: Any, a: Any, b: Any, **kw: Any) -> Contender:
    return Contender(
        id=ident, title=title, group=group, mechanism="pipe", api=api, side_a=a, side_b=b, **kw
    )


def pipe_contenders(notes: list[str]) -> list[Contender]:
    """The raw pipe baseline, and ipcwire's pipe rows when the mechanism is there."""
    raw_note = (
        "two os.pipe()s grown to ipcwire's size (F_SETPIPE_SZ, 1 MiB), so the ratio compares "
        "code, not buffers; os.write of length+payload, os.readv into one buffer"
    )
    rows = [
        _row("raw/pipe", "raw Python, pipe", "baseline", "blocking", raw_side_a, raw_side_b,
             note=raw_note),
        _row("raw/pipe/batched", "raw Python, pipe, batched", "baseline", "blocking",
             raw_side_a, raw_side_b, kinds=("throughput",), batched=True, baseline="raw/pipe",
             note="frames joined into one write per batch"),
        _row("raw/pipe/asyncio", "raw Python, pipe, asyncio", "baseline", "asyncio",
             raw_aside_a, raw_aside_b, baseline="raw/pipe", note=RAW_AIO_NOTE),
    ]  # fmt: skip
    try:
        import ipcwire.pipe  # noqa: F401
    except ImportError as exc:
        notes.append(f"pipe: ipcwire's pipe mechanism not measured: {exc}")
        return rows
    note = "ipcwire.pipe.ends(): two pipes, fds handed over with SCM_RIGHTS"
    for api, a, b, suffix in (
        ("blocking", ipcwire_side_a, ipcwire_side_b, ""),
        ("asyncio", ipcwire_aside_a, ipcwire_aside_b, ", asyncio"),
    ):
        ident = f"ipcwire/pipe/{api}"
        base = "raw/pipe" if api == "blocking" else "raw/pipe/asyncio"
        rows.append(_row(ident, f"ipcwire pipe{suffix}", "ipcwire", api, a, b,
                         baseline=base, note=note))  # fmt: skip
        rows.append(_row(f"{ident}/batched", f"ipcwire pipe{suffix}, batched", "ipcwire", api,
                         a, b, kinds=("throughput",), batched=True, baseline=base,
                         note="send_many / recv_many"))  # fmt: skip
    return rows

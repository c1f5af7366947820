"""``ipcwire bench`` rows for a child's stdin/stdout: ``ipcwire.spawn`` and ``raw/spawn``.

The benchmark's two sides are two long-lived worker processes pinned to their CPUs, and the
harness runs the loops in them (B sends, A echoes or counts), so the child cannot be a third
process running a loop of its own. Instead the *pipes* are a real child's: side B (the parent)
starts a child with pipes on its stdin and stdout, with ``ipcwire.spawn`` or with
``subprocess.Popen``; that child is a stand-in that hands its fds 0 and 1 to side A over a
Unix socket (``SCM_RIGHTS``) and then waits, idle, until side A is done. Side A holds the
child's end of both pipes, as the child would: ``ipcwire.spawn.stdio_channel`` on them (the
channel ``ipcwire.stdio()`` makes once it has moved the protocol off fds 0 and 1), or the raw
link. So every message crosses the same two pipes between two pinned processes, with the
parent's real ``SpawnChannel`` (its pidfd watch included) on one side; the ipcwire rows and
the raw rows are set up and measured the same way.

``raw/spawn`` is what a careful programmer writes by hand: ``subprocess.Popen`` on two
``os.pipe()`` pairs (grown to ipcwire's 1 MiB, so the ratio compares code, not buffers),
``os.write`` of length + payload, ``os.readv`` into one buffer (the ``raw/pipe`` link);
``raw/spawn/asyncio`` the same pipes under ``connect_read_pipe`` / ``connect_write_pipe``.
Imported by the bench when listed in ``CONTENDER_MODULES``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from typing import Any, Final

from ipcwire.bench.builtin.pipes import RAW_AIO_NOTE, RawAioPipeLink, RawPipeLink, raw_pipe
from ipcwire.bench.contender import Contender, Task, register_contender

__all__ = ["CONTENDERS"]

# The stand-in child: give fds 0 and 1 to side A, point them at /dev/null, wait until side A
# closes the socket (or dies), exit. Standard library only, so it starts fast.
_CHILD: Final = (
    "import os, socket, sys\n"
    "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
    "s.connect(sys.argv[1])\n"
    "socket.send_fds(s, [b'x'], [0, 1])\n"
    "n = os.open(os.devnull, os.O_RDWR)\n"
    "os.dup2(n, 0)\n"
    "os.dup2(n, 1)\n"
    "s.recv(1)\n"
)
_OPTIONS: Final[dict[str, Any]] = {"framing": "length", "codec": "bytes"}


def _argv(address: str) -> list[str]:
    return [sys.executable, "-I", "-S", "-c", _CHILD, address]


# -- side A: the child's end of the pipes --------------------------------------------------------
class _Held:
    """A link, and the socket whose closing lets the stand-in child exit."""

    def __init__(self, link: Any, keep: socket.socket) -> None:
        self._link = link
        self._keep = keep
        self.send = link.send
        self.recv = link.recv
        self.send_many = getattr(link, "send_many", None)
        self.recv_many = getattr(link, "recv_many", None)

    def close(self) -> None:
        try:
            self._link.close()
        finally:
            self._keep.close()

    async def aclose(self) -> None:
        try:
            close = getattr(self._link, "aclose", None)
            if close is not None:
                await close()
            else:
                self._link.close()
        finally:
            self._keep.close()


class _ChildEnd:
    """Side A's acceptor: a Unix socket where the stand-in child hands over its fds 0 and 1."""

    def __init__(self, task: Task) -> None:
        self._path = os.path.join(task.workdir, f"spawn{task.serial}.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self._path)
        self._sock.listen(1)
        self.address = self._path

    def take(self) -> tuple[socket.socket, int, int]:
        """The connection to the child (kept open), and the child's stdin and stdout fds."""
        self._sock.settimeout(30.0)
        conn, _ = self._sock.accept()
        try:
            conn.settimeout(30.0)
            _, fds, _, _ = socket.recv_fds(conn, 16, 2)
            if len(fds) != 2:
                raise RuntimeError(f"the child handed over {len(fds)} fds, expected 2")
            conn.settimeout(None)
        except BaseException:
            conn.close()
            raise
        return conn, fds[0], fds[1]

    def close(self) -> None:
        self._sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self._path)


class _Acceptor(_ChildEnd):
    def __init__(self, task: Task, raw: bool) -> None:
        super().__init__(task)
        self._raw = raw

    def accept(self) -> _Held:
        conn, rfd, wfd = self.take()
        if self._raw:
            return _Held(RawPipeLink(rfd, wfd), conn)
        from ipcwire.spawn import stdio_channel

        return _Held(stdio_channel(rfd, wfd, **_OPTIONS), conn)


class _AioAcceptor(_ChildEnd):
    def __init__(self, task: Task, raw: bool) -> None:
        super().__init__(task)
        self._raw = raw

    async def accept(self) -> _Held:
        conn, rfd, wfd = self.take()  # the child connects at once: blocking briefly is fine
        if self._raw:
            return _Held(await RawAioPipeLink.open(rfd, wfd), conn)
        import ipcwire.aio  # noqa: F401 - first, as asyncio users do (see bench/builtin/pipes.py)
        from ipcwire.spawn.aio import stdio_channel

        return _Held(await stdio_channel(rfd, wfd, **_OPTIONS), conn)

    async def aclose(self) -> None:
        self.close()


def ipcwire_side_a(task: Task, shared: Any) -> _Acceptor:
    return _Acceptor(task, raw=False)


def raw_side_a(task: Task, shared: Any) -> _Acceptor:
    return _Acceptor(task, raw=True)


async def ipcwire_aside_a(task: Task, shared: Any) -> _AioAcceptor:
    return _AioAcceptor(task, raw=False)


async def raw_aside_a(task: Task, shared: Any) -> _AioAcceptor:
    return _AioAcceptor(task, raw=True)


# -- side B: the parent ------------------------------------------------------------------------
def ipcwire_side_b(task: Task, address: str, shared: Any) -> Any:
    import ipcwire

    return ipcwire.spawn(_argv(address), **_OPTIONS)


async def ipcwire_aside_b(task: Task, address: str, shared: Any) -> Any:
    from ipcwire import aio

    return await aio.spawn(_argv(address), **_OPTIONS)


def _popen(address: str) -> tuple[subprocess.Popen[bytes], int, int]:
    """Start the child on two fresh pipes; our ends: (process, read fd, write fd)."""
    in_r, in_w = raw_pipe()  # grown as ipcwire.spawn grows its pipes: equal buffers
    out_r, out_w = raw_pipe()
    try:
        proc = subprocess.Popen(_argv(address), stdin=in_r, stdout=out_w, close_fds=True)
    except BaseException:
        for fd in (in_w, out_r):
            os.close(fd)
        raise
    finally:
        os.close(in_r)
        os.close(out_w)
    return proc, out_r, in_w


class _RawParent(RawPipeLink):
    """The raw link of the parent: closing it also reaps the child."""

    __slots__ = ("_proc",)

    def __init__(self, proc: subprocess.Popen[bytes], rfd: int, wfd: int) -> None:
        super().__init__(rfd, wfd)
        self._proc = proc

    def close(self) -> None:
        super().close()
        _reap(self._proc)


def _reap(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.wait(timeout=10.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class _RawAioParent:
    """The raw asyncio link of the parent: closing it also reaps the child."""

    def __init__(self, link: RawAioPipeLink, proc: subprocess.Popen[bytes]) -> None:
        self._link = link
        self._proc = proc
        self.send = link.send
        self.recv = link.recv
        self.send_many = link.send_many
        self.recv_many = link.recv_many

    async def aclose(self) -> None:
        await self._link.aclose()
        _reap(self._proc)  # the child exits as soon as side A lets it go


def raw_side_b(task: Task, address: str, shared: Any) -> _RawParent:
    proc, rfd, wfd = _popen(address)
    return _RawParent(proc, rfd, wfd)


async def raw_aside_b(task: Task, address: str, shared: Any) -> _RawAioParent:
    proc, rfd, wfd = _popen(address)
    return _RawAioParent(await RawAioPipeLink.open(rfd, wfd), proc)


# -- the rows ----------------------------------------------------------------------------------
def _row(ident: str, title: str, group: str, api: Any, a: Any, b: Any, **kw: Any) -> Contender:
    return Contender(
        id=ident, title=title, group=group, mechanism="spawn", api=api, side_a=a, side_b=b, **kw
    )


_RAW_NOTE: Final = (
    "subprocess.Popen on two os.pipe()s grown to ipcwire's 1 MiB; os.write of length+payload, "
    "os.readv into one buffer; "
    "the child's fds are used by side A (see ipcwire.spawn._bench)"
)
_IPCWIRE_NOTE: Final = (
    "ipcwire.spawn(framing='length', codec='bytes') in the parent; "
    "ipcwire.spawn.stdio_channel on the child's fds 0/1 in side A"
)

CONTENDERS: Final = (
    _row("raw/spawn", "raw Python, child stdin/stdout", "baseline", "blocking",
         raw_side_a, raw_side_b, note=_RAW_NOTE),
    _row("raw/spawn/batched", "raw Python, child stdin/stdout, batched", "baseline", "blocking",
         raw_side_a, raw_side_b, kinds=("throughput",), batched=True, baseline="raw/spawn",
         note="frames joined into one write per batch"),
    _row("raw/spawn/asyncio", "raw Python, child stdin/stdout, asyncio", "baseline", "asyncio",
         raw_aside_a, raw_aside_b, baseline="raw/spawn",
         note="subprocess.Popen on two os.pipe()s; " + RAW_AIO_NOTE),
    _row("ipcwire/spawn/blocking", "ipcwire spawn", "ipcwire", "blocking",
         ipcwire_side_a, ipcwire_side_b, baseline="raw/spawn", note=_IPCWIRE_NOTE),
    _row("ipcwire/spawn/blocking/batched", "ipcwire spawn, batched", "ipcwire", "blocking",
         ipcwire_side_a, ipcwire_side_b, kinds=("throughput",), batched=True,
         baseline="raw/spawn", note="send_many / recv_many"),
    _row("ipcwire/spawn/asyncio", "ipcwire spawn, asyncio", "ipcwire", "asyncio",
         ipcwire_aside_a, ipcwire_aside_b, baseline="raw/spawn/asyncio",
         note="ipcwire.aio.spawn in the parent; ipcwire.spawn.aio.stdio_channel in side A"),
    _row("ipcwire/spawn/asyncio/batched", "ipcwire spawn, asyncio, batched", "ipcwire",
         "asyncio", ipcwire_aside_a, ipcwire_aside_b, kinds=("throughput",), batched=True,
         baseline="raw/spawn/asyncio", note="send_many / recv_many"),
)  # fmt: skip

for _c in CONTENDERS:
    register_contender(_c)

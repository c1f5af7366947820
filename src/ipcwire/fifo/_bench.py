"""Two named pipes used directly, as ``ipcwire bench`` baselines: ``raw/fifo`` and
``raw/fifo/asyncio`` (the ids ipcwire's fifo rows compare with).

Measured like ipcwire's ``fifo://<dir>/f<n>.fifo?reply=<dir>/f<n>-reply.fifo``: side A makes
both FIFOs (0600) in the run's directory and reads the first, side B writes it and reads the
reply FIFO, which side A writes. What a careful programmer writes by hand: plain blocking
``open``s (each side's open of the reply FIFO waits for the other's), ``os.write`` of a 4-byte
length and the payload, ``os.readv`` into one reusable buffer (the ``raw/pipe`` link); the
asyncio flavour puts the same fds under ``connect_read_pipe`` / ``connect_write_pipe``.
Imported by the bench when listed in ``CONTENDER_MODULES``.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Final

from ipcwire.bench.builtin.pipes import (
    RAW_AIO_NOTE,
    RawAioPipeLink,
    RawPipeLink,
    grow_like_ipcwire,
)
from ipcwire.bench.contender import Contender, Task, register_contender

__all__ = ["CONTENDERS"]


class _Fifos:
    """Side A's acceptor: both FIFOs made, the request FIFO open for reading."""

    def __init__(self, task: Task) -> None:
        self._path = os.path.join(task.workdir, f"rawf{task.serial}.fifo")
        self._reply = os.path.join(task.workdir, f"rawf{task.serial}-reply.fifo")
        os.mkfifo(self._path, 0o600)
        os.mkfifo(self._reply, 0o600)
        # O_NONBLOCK so this open does not wait for a writer; reads are blocking afterwards.
        self._rfd = os.open(self._path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        os.set_blocking(self._rfd, True)
        grow_like_ipcwire(self._rfd)  # as ipcwire's fifo does: the ratio compares code, not buffers
        self.address = f"{self._path} {self._reply}"

    def fds(self) -> tuple[int, int]:
        """Our read fd, and the reply FIFO opened for writing (waits for side B to open it)."""
        wfd = os.open(self._reply, os.O_WRONLY | os.O_CLOEXEC)
        grow_like_ipcwire(wfd)
        return self._rfd, wfd

    def close(self) -> None:
        for path in (self._path, self._reply):
            with contextlib.suppress(OSError):
                os.unlink(path)


class _Acceptor(_Fifos):
    def accept(self) -> RawPipeLink:
        return RawPipeLink(*self.fds())


class _AioAcceptor(_Fifos):
    async def accept(self) -> RawAioPipeLink:
        return await RawAioPipeLink.open(*self.fds())  # side B opens at once: blocking is fine

    async def aclose(self) -> None:
        self.close()


def _open_b(address: str) -> tuple[int, int]:
    path, reply = address.split(" ")
    wfd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)  # side A reads it already: at once
    try:
        rfd = os.open(reply, os.O_RDONLY | os.O_CLOEXEC)  # meets side A's open for writing
    except BaseException:
        os.close(wfd)
        raise
    return rfd, wfd


def side_a(task: Task, shared: Any) -> _Acceptor:
    return _Acceptor(task)


def side_b(task: Task, address: str, shared: Any) -> RawPipeLink:
    return RawPipeLink(*_open_b(address))


async def aio_side_a(task: Task, shared: Any) -> _AioAcceptor:
    return _AioAcceptor(task)


async def aio_side_b(task: Task, address: str, shared: Any) -> RawAioPipeLink:
    return await RawAioPipeLink.open(*_open_b(address))


_NOTE: Final = (
    "two FIFOs grown to ipcwire's size (F_SETPIPE_SZ, 1 MiB), so the ratio compares code, not "
    "buffers; blocking opens; os.write of length+payload, os.readv into one buffer"
)

CONTENDERS: Final = (
    Contender(
        id="raw/fifo",
        title="raw Python, FIFO",
        group="baseline",
        mechanism="fifo",
        api="blocking",
        side_a=side_a,
        side_b=side_b,
        note=_NOTE,
    ),
    Contender(
        id="raw/fifo/batched",
        title="raw Python, FIFO, batched",
        group="baseline",
        mechanism="fifo",
        api="blocking",
        side_a=side_a,
        side_b=side_b,
        kinds=("throughput",),
        batched=True,
        baseline="raw/fifo",
        note="frames joined into one write per batch",
    ),
    Contender(
        id="raw/fifo/asyncio",
        title="raw Python, FIFO, asyncio",
        group="baseline",
        mechanism="fifo",
        api="asyncio",
        side_a=aio_side_a,
        side_b=aio_side_b,
        baseline="raw/fifo",
        note="two FIFOs, blocking opens; " + RAW_AIO_NOTE,
    ),
)

for _c in CONTENDERS:
    register_contender(_c)

"""``posix_ipc`` used directly, as ``ipcwire bench`` baselines: ``raw/mq`` and
``raw/mq/asyncio`` (the ids ipcwire's mq rows compare with).

Two queues of the kernel's default size, one each way; ``send`` is one ``mq_send`` of the
payload, ``recv`` one ``mq_receive``: what a careful programmer writes by hand. Messages are
limited to the queue's msgsize (8 KiB by default), so larger sizes have no baseline (ipcwire
sends them in pieces). The asyncio flavour waits on the queue descriptors with
``add_reader``/``add_writer``. Imported by the bench when listed in ``CONTENDER_MODULES``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Final

import posix_ipc

from ipcwire.bench.contender import Contender, Task, register_contender
from ipcwire.mq import limits

__all__ = ["CONTENDERS"]


def _names(task: Task) -> tuple[str, str]:
    base = f"/iwraw-{os.getpid()}-{task.serial}"
    return base + "-up", base + "-dn"


class _Link:
    """One end: ``out`` to send on, ``inq`` to receive from (blocking)."""

    def __init__(self, out: Any, inq: Any, owner: bool) -> None:
        self._out = out
        self._in = inq
        self._owner = owner

    def send(self, message: bytes) -> None:
        self._out.send(message)

    def recv(self) -> bytes:
        data: bytes = self._in.receive()[0]
        return data

    def close(self) -> None:
        for q in (self._out, self._in):
            if self._owner:
                try:
                    q.unlink()
                except posix_ipc.ExistentialError:
                    pass
            q.close()


class _Acceptor:
    def __init__(self, task: Task) -> None:
        up, dn = _names(task)
        flags = posix_ipc.O_CREX
        self._up = posix_ipc.MessageQueue(up, flags, mode=0o600)
        self._dn = posix_ipc.MessageQueue(dn, flags, mode=0o600)
        self.address = f"{up} {dn}"

    def accept(self) -> _Link:
        return _Link(self._dn, self._up, owner=True)

    def close(self) -> None:
        pass  # the link unlinks


def side_a(task: Task, shared: Any) -> _Acceptor:
    return _Acceptor(task)


def side_b(task: Task, address: str, shared: Any) -> _Link:
    up, dn = address.split()
    return _Link(posix_ipc.MessageQueue(up), posix_ipc.MessageQueue(dn), owner=False)


class _AioLink:
    """One end for asyncio: non-blocking queues, waiting on their descriptors."""

    def __init__(self, out: Any, inq: Any, owner: bool) -> None:
        out.block = False
        inq.block = False
        self._sync = _Link(out, inq, owner)
        self._out = out
        self._in = inq
        self._loop = asyncio.get_running_loop()

    async def _wait(self, fd: int, write: bool) -> None:
        fut = self._loop.create_future()
        add, remove = (
            (self._loop.add_writer, self._loop.remove_writer)
            if write
            else (self._loop.add_reader, self._loop.remove_reader)
        )

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        add(fd, ready)
        try:
            await fut
        finally:
            remove(fd)

    async def send(self, message: bytes) -> None:
        while True:
            try:
                self._out.send(message)
                return
            except posix_ipc.BusyError:
                await self._wait(self._out.mqd, write=True)

    async def recv(self) -> bytes:
        while True:
            try:
                data: bytes = self._in.receive()[0]
                return data
            except posix_ipc.BusyError:
                await self._wait(self._in.mqd, write=False)

    async def aclose(self) -> None:
        self._sync.close()


class _AioAcceptor:
    def __init__(self, task: Task) -> None:
        self._sync = _Acceptor(task)
        self.address = self._sync.address

    async def accept(self) -> _AioLink:
        return _AioLink(self._sync._dn, self._sync._up, owner=True)

    async def aclose(self) -> None:
        pass


async def aio_side_a(task: Task, shared: Any) -> _AioAcceptor:
    return _AioAcceptor(task)


async def aio_side_b(task: Task, address: str, shared: Any) -> _AioLink:
    up, dn = address.split()
    return _AioLink(posix_ipc.MessageQueue(up), posix_ipc.MessageQueue(dn), owner=False)


_NOTE: Final = "posix_ipc directly: one mq_send / mq_receive per message, default queue sizes"

CONTENDERS: Final = (
    Contender(
        id="raw/mq",
        title="raw Python, POSIX message queue",
        group="baseline",
        mechanism="mq",
        api="blocking",
        side_a=side_a,
        side_b=side_b,
        framing="one kernel message",
        overhead=0,
        max_size=limits().msgsize_default,
        requires=("posix_ipc",),
        note=_NOTE,
    ),
    Contender(
        id="raw/mq/asyncio",
        title="raw Python, POSIX message queue, asyncio",
        group="baseline",
        mechanism="mq",
        api="asyncio",
        side_a=aio_side_a,
        side_b=aio_side_b,
        framing="one kernel message",
        overhead=0,
        max_size=limits().msgsize_default,
        requires=("posix_ipc",),
        note=_NOTE + "; add_reader/add_writer on the queue descriptors",
    ),
)

for _c in CONTENDERS:
    register_contender(_c)

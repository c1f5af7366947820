"""Plain files as the ``ipcwire bench`` baseline of the spool: ``raw/spool``.

What a careful programmer writes by hand for one producer and one consumer with the same
durability as ipcwire's default: the producer writes a temporary file, fsyncs it, renames it
into ``new/`` and fsyncs the directory; the consumer lists ``new/`` in name order, reads each
file and deletes it, waiting with inotify when it is empty. No claims, leases or locks, which
is what ipcwire adds for several consumers and crashes. Throughput only (a spool is one-way).
Imported by the bench when listed in ``CONTENDER_MODULES``.
"""

from __future__ import annotations

import os
from typing import Any, Final

from ipcwire.bench.contender import Contender, Task, register_contender

__all__ = ["CONTENDERS"]

_IN_MOVED_TO: Final = 0x80


class _Producer:
    def __init__(self, path: str) -> None:
        self._tmp = os.path.join(path, "tmp")
        self._new = os.path.join(path, "new")
        self._dir = os.open(self._new, os.O_RDONLY | os.O_DIRECTORY)
        self._seq = 0

    def send(self, message: bytes) -> None:
        self._seq += 1
        name = f"{self._seq:012d}"
        tmp = os.path.join(self._tmp, name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, message)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, os.path.join(self._new, name))
        os.fsync(self._dir)

    def recv(self) -> bytes:
        raise NotImplementedError("the producer side only sends")

    def close(self) -> None:
        os.close(self._dir)


class _Consumer:
    def __init__(self, path: str) -> None:
        import inotify_simple

        self._new = os.path.join(path, "new")
        self._ino = inotify_simple.INotify()
        self._ino.add_watch(self._new, _IN_MOVED_TO)
        self._backlog: list[str] = []

    def send(self, message: bytes) -> None:
        raise NotImplementedError("the consumer side only receives")

    def recv(self) -> bytes:
        while not self._backlog:
            self._backlog = sorted(os.listdir(self._new))
            if not self._backlog:
                self._ino.read(timeout=1000)
        path = os.path.join(self._new, self._backlog.pop(0))
        with open(path, "rb") as f:
            data = f.read()
        os.unlink(path)
        return data

    def close(self) -> None:
        self._ino.close()


class _Acceptor:
    def __init__(self, task: Task) -> None:
        self.address = os.path.join(task.workdir, f"rawspool{task.serial}")
        for sub in ("tmp", "new"):
            os.makedirs(os.path.join(self.address, sub), mode=0o700)

    def accept(self) -> _Consumer:
        return _Consumer(self.address)

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.address, ignore_errors=True)


def side_a(task: Task, shared: Any) -> _Acceptor:
    return _Acceptor(task)


def side_b(task: Task, address: str, shared: Any) -> _Producer:
    return _Producer(address)


CONTENDERS: Final = (
    Contender(
        id="raw/spool",
        title="raw Python, files (write, fsync, rename; read, unlink)",
        group="baseline",
        mechanism="spool",
        api="blocking",
        side_a=side_a,
        side_b=side_b,
        framing="one file per message",
        overhead=0,
        kinds=("throughput",),
        requires=("inotify_simple",),
        note="one producer, one consumer; durable like ipcwire's default (fsync)",
    ),
)

for _c in CONTENDERS:
    register_contender(_c)

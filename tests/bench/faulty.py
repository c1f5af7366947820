"""Contenders that cheat, for the honesty tests: each drops, truncates or corrupts messages.

Built on the raw Unix-socket baseline; imported by the worker processes (the contender is
pickled by reference), so they live in this importable module.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ipcwire.bench.builtin.raw import RawAcceptor, RawLink, unix_side_a, unix_side_b
from ipcwire.bench.contender import Contender, Task


class Truncating(RawLink):
    """Sends every message one byte short."""

    def send(self, message: bytes) -> None:
        super().send(message[:-1])


class Dropping(RawLink):
    """Silently drops one message in a hundred."""

    sent = 0

    def send(self, message: bytes) -> None:
        self.sent += 1
        if self.sent % 100:
            super().send(message)


class Corrupting(RawLink):
    """Flips the last byte of every message (size and header stay right)."""

    def send(self, message: bytes) -> None:
        data = bytearray(message)
        data[-1] ^= 0xFF
        super().send(bytes(data))


class Stale(RawLink):
    """Answers every message with the first one it ever received (a reused buffer)."""

    first: bytes | None = None

    def send(self, message: bytes) -> None:
        if self.first is None:
            self.first = message
        super().send(self.first)


class Crashing(RawLink):
    """Dies in the middle of a measurement (a segfault in a C library, an os._exit)."""

    sent = 0

    def send(self, message: bytes) -> None:
        self.sent += 1
        if self.sent == 50:
            os._exit(3)
        super().send(message)


class Segfaulting(Crashing):
    """Dies by a signal in the middle of a measurement."""

    def send(self, message: bytes) -> None:
        if self.sent == 49:
            os.kill(os.getpid(), 9)
        super().send(message)


class Forking(Crashing):
    """Exits mid-run leaving a child of its own that holds the worker's descriptors (as a
    library's helper process would); the child writes its pid to FORKED_PID_FILE."""

    def send(self, message: bytes) -> None:
        if self.sent == 49:
            child = os.fork()
            if child == 0:  # holds every descriptor of the worker, the socket included
                time.sleep(60)
                os._exit(0)
            with open(os.environ["FORKED_PID_FILE"], "w") as f:
                f.write(str(child))
        super().send(message)


NOISE = "noisy-contender: library chatter on file descriptor 2"


class Noisy(Truncating):
    """Writes to its stderr (as C libraries log), then truncates like :class:`Truncating`."""

    def send(self, message: bytes) -> None:
        os.write(2, (NOISE + "\n").encode())
        super().send(message)


_LINKS: dict[str, type[RawLink]] = {
    "noisy": Noisy,
    "truncating": Truncating,
    "dropping": Dropping,
    "corrupting": Corrupting,
    "stale": Stale,
    "crashing": Crashing,
    "segfaulting": Segfaulting,
    "forking": Forking,
}


class _FaultyAcceptor:
    def __init__(self, inner: RawAcceptor, link: type[RawLink]) -> None:
        self._inner = inner
        self._link = link
        self.address = inner.address

    def accept(self) -> RawLink:
        good = self._inner.accept()
        return self._link(good._sock)

    def close(self) -> None:
        self._inner.close()


def side_a(task: Task, shared: Any) -> Any:
    """Side A cheats when the contender says so (the echo of a round trip)."""
    acceptor = unix_side_a(task, shared)
    if task.contender.options.get("side") == "a":
        return _FaultyAcceptor(acceptor, _LINKS[task.contender.options["fault"]])
    return acceptor


def side_b(task: Task, address: str, shared: Any) -> RawLink:
    """Side B cheats when the contender says so (the sender of a throughput run)."""
    link = unix_side_b(task, address, shared)
    if task.contender.options.get("side") == "b":
        return _LINKS[task.contender.options["fault"]](link._sock)
    return link


def faulty(fault: str, side: str, kinds: tuple[Any, ...]) -> Contender:
    """A contender that cheats with ``fault`` on ``side``."""
    return Contender(
        id=f"test/{fault}-{side}",
        title=f"cheater ({fault}, side {side})",
        group="peer",
        mechanism="unix",
        api="blocking",
        side_a=side_a,
        side_b=side_b,
        kinds=kinds,
        baseline="raw/unix",
        options={"fault": fault, "side": side},
    )

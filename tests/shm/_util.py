"""Helpers of the shared-memory tests: a peer in another process, rings in one mapping."""

from __future__ import annotations

import gc
import mmap
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ipcwire.shm import _layout as L
from ipcwire.shm._link import Link
from ipcwire.shm._ring import RingEnd, available, init_ring, make_ring
from ipcwire.shm._setup import accept_link, connect_link

PEER = Path(__file__).with_name("peer.py")
IMPLS = available()
PAIRS = [(p, c) for p in IMPLS for c in IMPLS]  # (producer impl, consumer impl)


def ring_pair(
    capacity: int = 1 << 14,
    producer: str = "c",
    consumer: str = "c",
    bells: str = "socket",
    **kw: Any,
) -> tuple[RingEnd, RingEnd, mmap.mmap]:
    """Two ends of one ring in one anonymous mapping (one process: for unit tests).

    ``bells``: ``"socket"``, doorbells as links make them (two socketpairs: the producer
    parks on its end of ``space`` and rings its end of ``data``, the consumer the other way
    round), ``"nonblocking"`` (the same, non-blocking), or ``"eventfd"`` (one eventfd per
    waiting side, which the rings also accept)."""
    mm = mmap.mmap(-1, L.ring_span(capacity))
    init_ring(mm, capacity, impl=producer)
    if bells in ("socket", "nonblocking"):
        (data_p, data_c), (space_p, space_c) = socket.socketpair(), socket.socketpair()
        socks = [data_p, data_c, space_p, space_c]
        for sock in socks:  # "nonblocking": as if someone set O_NONBLOCK on the doorbells
            sock.setblocking(bells == "socket")
        fds = {
            "producer": (space_p.fileno(), data_p.fileno()),
            "consumer": (data_c.fileno(), space_c.fileno()),
        }
    else:
        data, space = os.eventfd(0, os.EFD_NONBLOCK), os.eventfd(0, os.EFD_NONBLOCK)
        socks = []
        fds = {"producer": (space, data), "consumer": (data, space)}
    impls = {"producer": producer, "consumer": consumer}

    def end(role: str) -> RingEnd:
        wait_fd, wake_fd = fds[role]
        return make_ring(
            mm, role, impl=impls[role], name="test", wait_fd=wait_fd, wake_fd=wake_fd, **kw
        )

    try:
        tx = end("producer")
        rx = end("consumer")
    finally:  # each end keeps its own copies
        for sock in socks:
            sock.close()
        if not socks:
            os.close(data)
            os.close(space)
    return tx, rx, mm


class Peer:
    """A peer process running tests/shm/peer.py, connected by a Unix socketpair."""

    def __init__(self, proc: subprocess.Popen[str], sock: socket.socket | None) -> None:
        self.proc = proc
        self.sock = sock

    def line(self, timeout: float = 30.0) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            _, err = self.proc.communicate(timeout=timeout)
            raise AssertionError(f"peer exited ({self.proc.returncode}) without answering: {err}")
        return line.strip()

    def tell(self, text: str = "") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def finish(self, timeout: float = 60.0) -> str:
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, f"peer failed ({self.proc.returncode}): {err}"
        return out.strip()

    def link(self, role: str, impl: str = IMPLS[0], policy: str = "hybrid", **kw: Any) -> Link:
        """Run this side of the setup (``role`` of this process) on the socket."""
        assert self.sock is not None
        deadline = time.monotonic() + 10
        if role == "server":
            return accept_link(self.sock, deadline=deadline, impl=impl, policy=policy, **kw)
        return connect_link(self.sock, deadline=deadline, impl=impl, policy=policy, **kw)


@contextmanager
def peer(
    role: str,
    action: str,
    *args: object,
    impl: str = IMPLS[0],
    policy: str = "hybrid",
    env: dict[str, str] | None = None,
) -> Iterator[Peer]:
    """Start tests/shm/peer.py as ``role`` running ``action``; killed and reaped at the end."""
    mine, theirs = socket.socketpair()
    cmd = [sys.executable, str(PEER), role, str(theirs.fileno()), impl, policy, action]
    proc = subprocess.Popen(
        cmd + [str(a) for a in args],
        pass_fds=[theirs.fileno()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    theirs.close()
    try:
        yield Peer(proc, mine)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
        mine.close()


def memfd_maps() -> int:
    """How many mappings of ipcwire memfds this process has."""
    with open("/proc/self/maps") as f:
        return sum("memfd:ipcwire" in line for line in f)


def open_fds() -> set[tuple[str, str]]:
    """This process's open descriptors and what each points at (after a GC pass, so objects
    other tests dropped are finalised first); a new pair means a new descriptor."""
    gc.collect()
    out: set[tuple[str, str]] = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.add((fd, os.readlink(f"/proc/self/fd/{fd}")))
        except OSError:
            pass  # the directory listing's own descriptor, already closed
    return out


def dev_shm() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except FileNotFoundError:
        return set()


@contextmanager
def process(action: str, *args: object, policy: str = "hybrid") -> Iterator[Peer]:
    """A peer process using the public API (no socketpair: it connects or listens by URL)."""
    cmd = [sys.executable, str(PEER), "-", "-1", IMPLS[0], policy, action]
    proc = subprocess.Popen(
        cmd + [str(a) for a in args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield Peer(proc, None)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)

"""The other process of the shared-memory tests.

    python peer.py ROLE FD IMPL POLICY ACTION [ARGS...]

ROLE ``server`` or ``client``: run the link setup on the connected Unix socket FD (inherited).
IMPL ``c`` or ``python``: which ring implementation this process uses.
Actions (each prints one line per event on stdout, flushed):

    echo                      send every message back until end of channel
    sink N                    receive N verified messages, print "ok N BYTES"
    source N SEED MAX         send N verified messages of random sizes up to MAX, then close
    hold                      print "ready", then wait in recv; print how that ended
    idle                      print "ready", then wait for a line on stdin (rings untouched)
    flood                     print "ready", then send until the ring is full and block
    corrupt WHAT              print "ready", wait for a line on stdin, corrupt the ring this
                              side writes (WHAT: tail | record | kind), print "done"
    hostile WHAT              (client) send a bad setup: unsealed | size | magic | fds |
                              doorbell | writesealed
    serve PATH COUNT          listen on PATH, accept COUNT links, echo one message each, then
                              print "fds N maps M" (this process's fds and memfd mappings)
    listen-hold URL           (public API) listen, accept one channel, print "ready", wait in
                              recv, print how it ended
    connect-hold URL          (public API) connect, print "ready", the same

A verified message is ``seq (8 bytes) + crc32 (4 bytes) + payload``.
"""

from __future__ import annotations

import mmap
import os
import random
import socket
import struct
import sys
import time
import zlib
from typing import Any

import ipcwire
from ipcwire.channel import Channel
from ipcwire.errors import EndOfChannel, IpcwireError
from ipcwire.shm import _layout as L
from ipcwire.shm._frames import send_frame
from ipcwire.shm._link import Link
from ipcwire.shm._setup import accept_link, connect_link

HEAD = struct.Struct("=QI")
POOL = random.Random(1).randbytes(1 << 22)


def say(*words: object) -> None:
    print(*words, flush=True)


def make_message(seq: int, rng: random.Random, max_size: int) -> bytes:
    roll = rng.random()
    if roll < 0.95:
        n = rng.randrange(0, min(max_size, 256) + 1)
    elif roll < 0.997:
        n = rng.randrange(0, min(max_size, 1 << 14) + 1)
    else:  # long: split into fragments by a 64 KiB ring
        n = rng.randrange(0, max_size + 1)
    off = rng.randrange(0, len(POOL) - n + 1)
    payload = POOL[off : off + n]
    return HEAD.pack(seq, zlib.crc32(payload)) + payload


def check_message(msg: bytes, seq: int) -> int:
    got, crc = HEAD.unpack_from(msg)
    if got != seq:
        raise AssertionError(f"expected message {seq}, got {got}")
    if zlib.crc32(memoryview(msg)[HEAD.size :]) != crc:
        raise AssertionError(f"message {seq} is corrupt (checksum)")
    return len(msg)


def link_up(role: str, fd: int, impl: str, policy: str, **kw: Any) -> Link:
    sock = socket.socket(fileno=fd)
    deadline = time.monotonic() + 10
    if role == "server":
        return accept_link(sock, deadline=deadline, impl=impl, policy=policy, name="peer", **kw)
    return connect_link(sock, deadline=deadline, impl=impl, policy=policy, name="peer", **kw)


def hostile(fd: int, what: str) -> None:
    sock = socket.socket(fileno=fd)
    cap = 1 << 16
    size = 2 * L.ring_span(cap)
    mfd = os.memfd_create("hostile", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(mfd, size)
    import fcntl

    mm = mmap.mmap(mfd, size)
    if what != "magic":
        for off in (0, L.ring_span(cap)):
            struct.pack_into("=QIIQ", mm, off, L.MAGIC, L.VERSION, L.HEADER_SIZE, cap)
    if what != "unsealed":
        seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
        if what == "writesealed":  # (no writable mapping may exist when sealing writes)
            mm.close()
            seals |= fcntl.F_SEAL_WRITE
        fcntl.fcntl(mfd, fcntl.F_ADD_SEALS, seals)
    announced = size + 4096 if what == "size" else size
    pairs = [socket.socketpair(), socket.socketpair()]
    bells = [a.fileno() for a, _ in pairs]
    if what == "doorbell":  # eventfds (what older ipcwire sent) where sockets belong
        bells = [os.eventfd(0), os.eventfd(0)]
    fds = [mfd, *bells, *bells] if what == "fds" else [mfd, *bells]
    hello = {"shm": 1, "capacity": [cap, cap], "size": announced}
    if what == "size":
        hello["capacity"] = [cap * 2, cap]
    send_frame(sock, hello, time.monotonic() + 5, fds)
    data = sock.recv(1 << 16)
    say("answer", data[4:].decode(errors="replace"))


def serve(path: str, count: int, impl: str, policy: str) -> None:
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    lsock.listen(16)
    say("ready")
    for _ in range(count):
        conn, _ = lsock.accept()
        link = accept_link(conn, deadline=time.monotonic() + 10, impl=impl, policy=policy)
        link.tx.send(link.rx.recv(timeout=10))
        try:
            link.rx.recv(timeout=10)
        except EndOfChannel:
            pass
        link.close()
    lsock.close()
    with open("/proc/self/maps") as f:
        maps = sum("memfd:ipcwire" in line for line in f)
    say("fds", len(os.listdir("/proc/self/fd")), "maps", maps)


def hold(ch: Channel) -> None:
    say("ready")
    t0 = time.monotonic()
    try:
        ch.recv()
        say("message")
    except IpcwireError as exc:
        say(type(exc).__name__, f"{time.monotonic() - t0:.3f}")


def main() -> None:
    role, fd, impl, policy, action, *args = sys.argv[1:]
    if action == "listen-hold":
        with ipcwire.listen(args[0], policy=policy) as listener:
            say("listening")
            with listener.accept(timeout=30) as ch:
                hold(ch)
        return
    if action == "connect-hold":
        with ipcwire.connect(args[0], policy=policy, timeout=30) as ch:
            hold(ch)
        return
    if action == "hostile":
        hostile(int(fd), args[0])
        return
    if action == "serve":
        serve(args[0], int(args[1]), impl, policy)
        return
    capacity = int(os.environ.get("PEER_CAPACITY", str(1 << 16)))
    kw: dict[str, Any] = {"capacity": (capacity, capacity)} if role == "client" else {}
    link = link_up(role, int(fd), impl, policy, **kw)
    if action == "echo":
        try:
            while True:
                link.tx.send(link.rx.recv())
        except EndOfChannel:
            pass
    elif action == "sink":
        total = 0
        for seq in range(int(args[0])):
            total += check_message(link.rx.recv(timeout=30), seq)
        say("ok", args[0], total)
    elif action == "source":
        rng = random.Random(int(args[1]))
        for seq in range(int(args[0])):
            link.tx.send(make_message(seq, rng, int(args[2])), timeout=30)
    elif action == "hold":
        say("ready")
        t0 = time.monotonic()
        try:
            link.rx.recv()
            say("message")
        except IpcwireError as exc:
            say(type(exc).__name__, f"{time.monotonic() - t0:.3f}")
    elif action == "idle":
        say("ready")
        sys.stdin.readline()
    elif action == "flood":
        say("ready")
        try:
            while True:
                link.tx.send(b"x" * 1000)
        except IpcwireError as exc:
            say(type(exc).__name__)
    elif action == "corrupt":
        say("ready")
        sys.stdin.readline()
        corrupt(link, role, args[0])
        say("done")
        sys.stdin.readline()
    link.close()


def corrupt(link: Link, role: str, what: str) -> None:
    seg = link.segment
    assert seg is not None
    off = seg.offsets[0] if role == "client" else seg.offsets[1]  # the ring this side writes
    mm = seg.mm
    if what == "tail":
        struct.pack_into("=Q", mm, off + 128, (1 << 40) + 16)
    elif what == "record":
        struct.pack_into("=IIQ", mm, off + L.HEADER_SIZE, 1 << 30, L.MSG, 0)
        struct.pack_into("=Q", mm, off + 128, 64)
    elif what == "kind":
        struct.pack_into("=IIQ", mm, off + L.HEADER_SIZE, 3, 77, 0)
        struct.pack_into("=Q", mm, off + 128, 32)


if __name__ == "__main__":
    main()

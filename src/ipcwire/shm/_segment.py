"""Shared-memory segments: one anonymous memfd per connection, holding its two rings.

Why memfd and not ``/dev/shm``: a memfd has no name in any filesystem. It lives exactly as
long as a file descriptor or a mapping refers to it, so when both processes exit, normally or
by ``kill -9``, the kernel frees it; nothing is ever left behind to clean up, and no other
process can open it by name. It is handed to the peer over the connection's Unix socket
(SCM_RIGHTS).

The creator (the connecting client, so the client pays for the memory it asks for) makes it
mode 0600, allocates every page up front (``posix_fallocate``: running out of memory is an
error now, not a SIGBUS later) and seals its size (F_SEAL_SHRINK/GROW/SEAL), so that neither
side can shrink it under the other's mapping (which would SIGBUS it). The receiver checks
the seals and the size before mapping. It does not allocate the pages itself: a client that
skipped that would otherwise make the server commit memory on its behalf.

Layout: ring 0 (client to server) at offset 0, ring 1 (server to client) at the next page
boundary after it; each ring is a 512-byte header and its data area (see ``_layout``).
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import socket
import stat
from dataclasses import dataclass
from typing import Final

from ipcwire.errors import RemoteProtocolError, ResourceExhausted
from ipcwire.shm import _layout as L
from ipcwire.shm._ring import init_ring

__all__ = ["MEMFD_NAME", "Segment", "check_doorbell", "create_segment", "open_segment"]

MEMFD_NAME: Final = "ipcwire-shm"
_SEALS: Final = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL


@dataclass(frozen=True, slots=True)
class Segment:
    """A mapped segment: ``offsets[i]`` and ``capacities[i]`` of ring i."""

    mm: mmap.mmap
    size: int
    capacities: tuple[int, int]
    offsets: tuple[int, int]


def layout(capacities: tuple[int, int]) -> tuple[tuple[int, int], int]:
    """Ring offsets and total size of a segment holding rings of these capacities."""
    first = L.ring_span(capacities[0])
    return (0, first), first + L.ring_span(capacities[1])


def _allocate(fd: int, size: int, who: str) -> None:
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
            raise ResourceExhausted(
                f"{who}: cannot allocate {size} bytes of shared memory ({exc.strerror}); "
                f"connect with a smaller capacity=, or free memory (memory cgroup limits "
                f"count shared memory too)"
            ) from exc
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise


def create_segment(capacities: tuple[int, int], *, impl: str | None = None) -> tuple[int, Segment]:
    """A new sealed memfd with two initialised rings, mapped; returns (fd, segment).

    The caller sends the fd to the peer, then closes it (the mapping keeps the memory).

    Raises:
        ResourceExhausted: not enough memory for the segment.
    """
    offsets, size = layout(capacities)
    fd = os.memfd_create(MEMFD_NAME, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.fchmod(fd, 0o600)
        os.ftruncate(fd, size)
        _allocate(fd, size, "creating a shared-memory segment")
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
        mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    except BaseException:
        os.close(fd)
        raise
    for off, cap in zip(offsets, capacities, strict=True):
        init_ring(mm, cap, off, impl=impl)
    return fd, Segment(mm=mm, size=size, capacities=capacities, offsets=offsets)


def open_segment(fd: int, capacities: tuple[int, int], who: str) -> Segment:
    """Map a segment received from the peer, after checking it cannot hurt us.

    Raises:
        RemoteProtocolError: not a sealed memfd of the announced size.
        ResourceExhausted: no memory or address space to map it.
    """
    offsets, size = layout(capacities)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size != size:
        raise RemoteProtocolError(
            f"{who} sent a shared-memory segment of {st.st_size} bytes, not the announced "
            f"{size}; refusing it"
        )
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    except OSError:
        seals = 0
    if not seals & fcntl.F_SEAL_SHRINK:
        raise RemoteProtocolError(
            f"{who} sent a shared-memory segment that is not sealed against shrinking; "
            f"mapping it would let the peer crash this process (SIGBUS), so it was refused"
        )
    try:
        mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    except PermissionError as exc:  # sealed against writing, or opened read-only
        raise RemoteProtocolError(
            f"{who} sent a shared-memory segment that cannot be mapped for writing "
            f"({exc.strerror}): sealed against writing, or read-only; refusing it"
        ) from exc
    except OSError as exc:
        if exc.errno != errno.ENOMEM:
            raise
        # (this process's address space, RLIMIT_AS, or the kernel's overcommit limit): the
        # client is told, with the fix, and this listener goes on
        raise ResourceExhausted(
            f"the server could not map the {size} bytes of rings asked for (capacities "
            f"{capacities[0]} and {capacities[1]}) ({exc.strerror}: out of memory or address "
            f"space); connect with a smaller capacity=, or raise the server's memory limit"
        ) from exc
    return Segment(mm=mm, size=size, capacities=capacities, offsets=offsets)


def check_doorbell(fd: int, who: str) -> None:
    """Refuse a file descriptor that is not a connected Unix stream socket (a doorbell).

    A doorbell is one end of a socketpair, so its peer has no address. A socket whose peer
    has one is the client's end of a connection to a listening socket: perhaps its own
    connection to this server. Taking that would make this process hold both ends of its own
    liveness socket, which then never hangs up: a waiter would never learn that the client
    died (even a spinning one, which asks that socket). So it is refused too.

    Raises:
        RemoteProtocolError: it is something else.
    """
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise RemoteProtocolError(
            f"{who} sent a file descriptor that is not a socket where a doorbell (one end of "
            f"a Unix stream socketpair) was expected"
        ) from exc
    peer: object = ""
    try:
        ok = sock.family == socket.AF_UNIX and sock.type == socket.SOCK_STREAM
        if ok:
            try:
                peer = sock.getpeername()
            except OSError:
                ok = False
    finally:
        sock.detach()
    if peer:
        raise RemoteProtocolError(
            f"{who} sent a socket connected to {peer!r} where a doorbell (one end of a Unix "
            f"stream socketpair) was expected; a connection to a listening socket (perhaps "
            f"the client's own connection to this server) is refused: holding it would keep "
            f"this server from seeing the client die"
        )
    if not ok:
        raise RemoteProtocolError(
            f"{who} sent a socket that is not a connected Unix stream socket where a doorbell "
            f"was expected"
        )

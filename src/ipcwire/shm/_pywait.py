"""The pure-Python ring's doorbells: how a blocked end sleeps, is woken, and sees its peer go.

:class:`_Wait` holds the fds a ring end waits on (a socket or an eventfd per direction, as the
C ring: see ring.h) and the liveness socket, and does the syscalls on them. It is separate from
``_pybase`` because it is the only part of the fallback that does file-descriptor I/O; the
ring logic there works on shared memory alone and calls this to wait and to wake the peer.
"""

from __future__ import annotations

import os
import select
import socket
import stat
from typing import Final

_DONTWAIT: Final = socket.MSG_DONTWAIT
_SEND_FLAGS: Final = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL


def _is_socket(fd: int) -> bool:
    return fd >= 0 and stat.S_ISSOCK(os.fstat(fd).st_mode)


def _sock(fd: int) -> socket.socket:
    s = socket.socket(fileno=fd)
    s.setblocking(True)  # the C ring parks in a blocking recv on this description too
    return s


class _Wait:
    """How a blocked end waits: the doorbells (sockets or eventfds, as the C ring: see
    ring.h), the liveness socket, the policy."""

    def __init__(self, wait_fd: int, wake_fd: int, alive_fd: int, policy: str, spin_ns: int):
        self.wait_fd = wait_fd
        self.wake_fd = wake_fd
        self.alive_fd = alive_fd
        self.policy = policy
        self.spin_ns = spin_ns
        self.wait_sock = _sock(wait_fd) if _is_socket(wait_fd) else None
        self.wake_sock = _sock(wake_fd) if _is_socket(wake_fd) else None
        if self.wait_sock is None and wait_fd >= 0:
            os.set_blocking(wait_fd, False)  # an eventfd: read after poll
        self.poller = select.poll()
        if wait_fd >= 0:
            self.poller.register(wait_fd, select.POLLIN | select.POLLRDHUP)
        if alive_fd >= 0:
            self.poller.register(alive_fd, select.POLLIN | select.POLLRDHUP)
        self.alive_poller = select.poll()
        if alive_fd >= 0:
            self.alive_poller.register(alive_fd, select.POLLIN | select.POLLRDHUP)

    def signal(self) -> None:
        try:
            if self.wake_sock is not None:
                self.wake_sock.send(b"\x01", _SEND_FLAGS)
            elif self.wake_fd >= 0:
                os.eventfd_write(self.wake_fd, 1)
        except (BlockingIOError, BrokenPipeError, ConnectionResetError):
            pass  # a wake-up is pending anyway, or the peer's end is gone

    def signal_self(self) -> None:
        """Wake a thread of ours parked in this ring (close()): a socket is shut for reading
        (its recv returns b"" from now on), an eventfd written."""
        try:
            if self.wait_sock is not None:
                self.wait_sock.shutdown(socket.SHUT_RD)
            elif self.wait_fd >= 0:
                os.eventfd_write(self.wait_fd, 1)
        except (BlockingIOError, OSError):
            pass

    def drain(self) -> bool:
        """Read what woke us. False: the socket's peer end is gone (or this side shut it)."""
        try:
            if self.wait_sock is not None:
                return self.wait_sock.recv(64, _DONTWAIT) != b""
            os.eventfd_read(self.wait_fd)
        except BlockingIOError:
            pass
        return True

    def sleep(self) -> bool:
        """Untimed park on a socket doorbell: one blocking recv (the GIL released). False: its
        peer end is gone, the liveness socket hung up, or this side shut the doorbell."""
        assert self.wait_sock is not None
        try:
            return self.wait_sock.recv(64) != b""
        except BlockingIOError:
            # the recv gave up (SO_RCVTIMEO: see _setup._bell), or someone made the socket
            # non-blocking: wait on the doorbell and the liveness socket, as the C ring does
            events = self.poller.poll(None)
            if any(fd == self.alive_fd for fd, _ in events):
                return False
            return self.drain()

    def alive(self) -> bool:
        return self.alive_fd < 0 or not self.alive_poller.poll(0)

    def close(self) -> None:
        for s in (self.wait_sock, self.wake_sock):
            if s is not None:
                s.close()
        if self.wait_sock is not None:
            self.wait_fd = -1
        if self.wake_sock is not None:
            self.wake_fd = -1
        self.wait_sock = self.wake_sock = None
        for name in ("wait_fd", "wake_fd", "alive_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)


def _dup(fd: int) -> int:
    return -1 if fd < 0 else os.dup(fd)  # inheritable=False by default

"""Small file-descriptor helpers shared by the pipe, fifo, spawn and signals mechanisms.

Making pipes (close-on-exec, grown to :data:`PIPE_SIZE` where the kernel allows), setting fd
flags (close-on-exec, non-blocking), telling what kind of file an fd is, closing fds after a
failure, and :class:`Waker`, an fd that :meth:`Waker.wake` makes readable. Separate from
:mod:`ipcwire.pipe._fd`, which holds :class:`~ipcwire.pipe._fd.FdStream` (the blocking byte
stream over fds), because these are used on their own too: a signal handler's self-pipe, a
child's plumbing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import stat
from typing import Final

from ipcwire._oserror import translate

__all__ = [
    "PIPE_BUF",
    "PIPE_SIZE",
    "Waker",
    "close_fds",
    "grow_pipe",
    "is_pipe",
    "is_pipe_like",
    "make_pipe",
    "set_cloexec",
    "set_nonblocking",
]

PIPE_BUF: Final = getattr(select, "PIPE_BUF", 512)  # writes up to this size are atomic
PIPE_SIZE: Final = 1024 * 1024  # what we ask the kernel for (Linux; best effort)


def set_cloexec(fd: int, on: bool = True) -> None:
    """Set or clear FD_CLOEXEC."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFD)
    fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC if on else flags & ~fcntl.FD_CLOEXEC)


def set_nonblocking(fd: int, on: bool = True) -> int:
    """Set or clear O_NONBLOCK; returns the previous file status flags."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK if on else flags & ~os.O_NONBLOCK)
    return flags


def is_pipe_like(fd: int) -> bool:
    """True for pipes, FIFOs and sockets (where O_NONBLOCK is safe to set on our copy)."""
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def is_pipe(fd: int) -> bool:
    """True for pipes and FIFOs (where a write of up to PIPE_BUF bytes is atomic)."""
    return stat.S_ISFIFO(os.fstat(fd).st_mode)


def grow_pipe(fd: int, size: int = PIPE_SIZE) -> None:
    """Ask for a larger pipe buffer (Linux F_SETPIPE_SZ); silently keep the default if refused
    (the per-user pipe memory limit, or another platform)."""
    setsz = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsz is None:
        return
    try:
        fcntl.fcntl(fd, setsz, size)
    except OSError:
        pass


def make_pipe(*, grow: bool = True) -> tuple[int, int]:
    """A new pipe ``(read_fd, write_fd)``, both close-on-exec.

    Raises:
        ResourceExhausted: out of file descriptors (EMFILE/ENFILE).
    """
    try:
        r, w = os.pipe2(os.O_CLOEXEC) if hasattr(os, "pipe2") else os.pipe()
    except OSError as exc:
        raise translate(exc, "a new pipe", "creating") from exc
    if not hasattr(os, "pipe2"):  # pragma: no cover - macOS
        set_cloexec(r)
        set_cloexec(w)
    if grow:
        grow_pipe(w)
    return r, w


def close_fds(*fds: int | None) -> None:
    """Close each of ``fds`` (None skipped), whatever the others do: for cleaning up after a
    failure, where a second error would only hide the first."""
    for fd in fds:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


class Waker:
    """An fd that becomes readable when :meth:`wake` is called (eventfd, or a pipe)."""

    __slots__ = ("_r", "_w", "fd")

    def __init__(self, endpoint: str = "a channel") -> None:
        if hasattr(os, "eventfd"):
            try:
                self.fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            except OSError as exc:
                raise translate(exc, endpoint, "creating an eventfd for") from exc
            self._r = self._w = self.fd
        else:  # pragma: no cover - macOS
            self._r, self._w = make_pipe(grow=False)
            set_nonblocking(self._r)
            set_nonblocking(self._w)
            self.fd = self._r

    def wake(self) -> None:
        try:
            if self._w == self._r:
                os.eventfd_write(self._w, 1)
            else:  # pragma: no cover - macOS
                os.write(self._w, b"x")
        except OSError:
            pass  # already awake (full) or closed: either way nobody sleeps on it

    def drain(self) -> None:
        """Reset to not-readable (after a wake was seen)."""
        try:
            if self._w == self._r:
                os.eventfd_read(self._r)
            else:  # pragma: no cover - macOS
                while os.read(self._r, 512):
                    pass
        except OSError:
            pass

    def close(self) -> None:
        for fd in {self._r, self._w}:
            try:
                os.close(fd)
            except OSError:
                pass

"""Blocking byte streams under a StreamChannel: a plain socket, a TLS socket, a pair of fds.

Each offers ``recv_into(view, timeout)``, ``send_all(data, timeout)``, ``shutdown()`` and
``close()``. A timeout raises :class:`TimeoutError` (``BlockingIOError`` counts as one);
``timeout=0`` never blocks; ``None`` blocks.

Plain sockets stay in blocking mode, so a receive or send costs one system call (Python's own
``settimeout`` polls before every call). A timed receive waits through SO_RCVTIMEO, but in
the extension's ``recv_within``: with Python's own recv the kernel ends such a wait with
EINTR whenever a signal handler is to run and Python retries it with the whole timeout again
(PEP 475), so a process taking signals more often than its timeout (a profiler's timer,
``signal:`` channels, SIGCHLD from many children) never timed out; ``recv_within`` goes on
for what is left. Without the extension, and for timed sends (which seldom wait), a call
first tries without waiting (MSG_DONTWAIT) and then waits in poll(), whose retries count down
too. Sends use MSG_NOSIGNAL: a vanished peer is EPIPE, never a SIGPIPE death.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
import weakref
from typing import Any, Final

from ipcwire._core.wire import Packed
from ipcwire._deadline import limit, timeval
from ipcwire._poll import wait_readable, wait_writable
from ipcwire._stream import native
from ipcwire._tls import TLS_RECORD, SharedTls
from ipcwire.errors import LocalProtocolError

__all__ = ["ByteStream", "PartialWrite", "SocketStream", "TlsStream", "forked_error", "watch_fork"]

_NOSIGNAL: Final = getattr(socket, "MSG_NOSIGNAL", 0)
_DONTWAIT: Final = getattr(socket, "MSG_DONTWAIT", 0)


class PartialWrite(TimeoutError):
    """A send timed out after writing part of a message: the stream is out of step."""

    def __init__(self, written: int) -> None:
        super().__init__(f"timed out after writing {written} bytes of a message")
        self.written = written


class ByteStream:
    """Interface of the blocking byte streams (documentation and typing only)."""

    def fileno(self) -> int:
        raise NotImplementedError

    def recv_into(self, view: memoryview, timeout: float | None) -> int:
        raise NotImplementedError

    def send_all(self, data: Packed, timeout: float | None) -> None:
        raise NotImplementedError

    def shutdown(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def owned(self) -> bool:
        """Whether this process opened it (False in a forked child: its parent's)."""
        return getattr(self, "_owner", None) == os.getpid()


class SocketStream(ByteStream):
    """A connected stream socket in blocking mode."""

    __slots__ = ("_owner", "_rcvtimeo", "sock")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self.sock = sock
        self._owner = os.getpid()
        self._rcvtimeo = 0.0  # the SO_RCVTIMEO set on the socket (0: none)

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv_into(self, view: memoryview, timeout: float | None) -> int:
        sock = self.sock
        wait = None if timeout is None else limit(timeout)
        if wait is None:
            if self._rcvtimeo:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval(None))
                self._rcvtimeo = 0.0
            return sock.recv_into(view)
        if wait <= 0:
            return sock.recv_into(view, 0, _DONTWAIT)
        recv_within = native.RECV_WITHIN
        if recv_within is not None:  # the kernel waits; a signal does not restart the wait
            current, self._rcvtimeo = self._rcvtimeo, wait  # (set when it returns or raises)
            return int(recv_within(sock.fileno(), view, wait, current))
        deadline = time.monotonic() + wait
        while True:  # without the extension: try, then wait in poll() for what is left
            try:
                return sock.recv_into(view, 0, _DONTWAIT)
            except BlockingIOError:
                left = _left(deadline)
                if left == 0.0 or not wait_readable(sock, left):
                    raise

    def send_all(self, data: Packed, timeout: float | None) -> None:
        if timeout is None:
            if type(data) is tuple:
                self._sendmsg_all(list(data), None)
            else:
                self.sock.sendall(data, _NOSIGNAL)  # type: ignore[arg-type]
            return
        deadline = None if (wait := limit(timeout)) is None else time.monotonic() + wait
        parts = list(data) if type(data) is tuple else [data]
        self._sendmsg_all(parts, deadline)  # type: ignore[arg-type]

    def _sendmsg_all(
        self, parts: list[bytes | bytearray | memoryview], deadline: float | None
    ) -> None:
        """Send every byte of ``parts``: blocking without ``deadline``; with one, never
        blocking in the kernel, waiting for room in poll() until it passes (then
        ``PartialWrite`` if some was sent, ``BlockingIOError`` if nothing was)."""
        sock = self.sock
        flags = _NOSIGNAL if deadline is None else _NOSIGNAL | _DONTWAIT
        views = [memoryview(p) for p in parts]
        sent_total = 0
        while views:
            try:
                n = sock.sendmsg(views, (), flags)
            except BlockingIOError:
                left = _left(deadline)
                if left == 0.0 or not wait_writable(sock, left):
                    if sent_total:
                        raise PartialWrite(sent_total) from None
                    raise
                continue
            sent_total += n
            while views and n >= views[0].nbytes:
                n -= views[0].nbytes
                views.pop(0)
            if views and n:
                views[0] = views[0][n:]

    def shutdown(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        if os.getpid() == self._owner:  # not in a forked child: its parent's connection
            self.shutdown()
        self.sock.close()


class TlsStream(ByteStream):
    """A TLS socket, shared through :class:`ipcwire._tls.SharedTls`: a thread receiving
    while another sends never has both inside OpenSSL at once (which it forbids)."""

    __slots__ = ("_owner", "sock")

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = SharedTls(sock)
        self._owner = os.getpid()

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv_into(self, view: memoryview, timeout: float | None) -> int:
        try:
            return self.sock.recv_into(view, timeout=timeout)
        except TimeoutError:
            if timeout == 0:
                raise BlockingIOError from None
            raise
        except ssl.SSLError as exc:
            raise ConnectionResetError(f"TLS error: {exc}") from exc

    def send_all(self, data: Packed, timeout: float | None) -> None:
        parts: tuple[bytes | bytearray | memoryview, ...] = (
            data if type(data) is tuple else (data,)  # type: ignore[assignment]
        )
        timeout = limit(timeout)
        # A TLS write that times out has written part of its records, and OpenSSL then only
        # accepts the same write again: the stream is out of step (PartialWrite), unless
        # nothing was handed to TLS at all. So first wait for room (nothing sent yet: a plain
        # timeout), then write record-sized pieces and count them.
        deadline = None if timeout is None else time.monotonic() + timeout
        if timeout is not None and not wait_writable(self.sock, timeout):
            raise TimeoutError("the socket buffer stayed full")
        written = 0
        try:
            for part in parts:
                view = memoryview(part).cast("B")
                for pos in range(0, view.nbytes, TLS_RECORD):
                    piece = view[pos : pos + TLS_RECORD]
                    left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                    written += piece.nbytes  # handed to TLS: on the wire, or owed to it
                    self.sock.send_piece(piece, left)
        except TimeoutError:
            raise PartialWrite(written) from None
        except ssl.SSLError as exc:
            raise ConnectionResetError(f"TLS error: {exc}") from exc

    def shutdown(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        if os.getpid() == self._owner:  # not in a forked child: its parent's connection
            self.shutdown()
        self.sock.close()


# -- across fork() --------------------------------------------------------------------------
# Channels over a connection of their own (unix, tcp, ws, http clients) whose copy in a forked
# child must refuse to be used: a prefork server that connected at import time (gunicorn
# --preload), a multiprocessing worker with the fork start method, a plain os.fork(). Used
# from both processes, the one connection carries both processes' messages, and each takes
# whichever reply comes first. Nothing checks the process id per message: in the child, the
# handler below marks every such channel (``_after_fork``), which turns its fast paths off,
# and the slow paths check the mark before they touch the connection or a lock (a parent's
# thread may have held one at the fork). Pipe channels are not here: an open pipe handed to
# a forked child is their documented use (docs/mechanisms/pipe.md).
_forkable: weakref.WeakSet[Any] = weakref.WeakSet()


def watch_fork(channel: Any) -> None:
    """Have ``channel._after_fork()`` called in every child this process forks."""
    _forkable.add(channel)


def _after_fork_in_child() -> None:
    channels = list(_forkable)
    _forkable.clear()  # the parent's: marked once (a grandchild inherits the mark)
    for ch in channels:
        try:
            ch._after_fork()
        except Exception:  # noqa: S112  (one channel's trouble must not stop the others)
            continue


os.register_at_fork(after_in_child=_after_fork_in_child)


def forked_error(url: str, owner: int) -> LocalProtocolError:
    """The error of a channel used in a process forked from its ``owner`` (grpc's words,
    ``ipcwire.grpc._channel.forked``, for the same mistake)."""
    return LocalProtocolError(
        f"{url} was opened in process {owner} and this is a child it forked ({os.getpid()}): "
        f"a connection does not cross fork() (both processes' messages would mix on it, and "
        f"each would take replies meant for the other); connect again in the child: in "
        f"gunicorn's post_fork hook or the worker's startup (not at import time with "
        f"--preload), in the function a multiprocessing Process runs. Nothing was sent or "
        f"received; the parent's channel is unaffected",
        endpoint=url,
    )


def _left(deadline: float | None) -> float | None:
    """Seconds until ``deadline`` (None: no limit), 0.0 once it passed."""
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)


def close_fd(fd: int) -> None:
    """Close an fd, ignoring "already closed"."""
    try:
        os.close(fd)
    except OSError:
        pass

"""Blocking byte streams under a StreamChannel: a plain socket, a TLS socket, a pair of fds.

Each offers ``recv_into(view, timeout)``, ``send_all(data, timeout)``, ``shutdown()`` and
``close()``. A timeout raises :class:`TimeoutError` (``BlockingIOError`` counts as one);
``timeout=0`` never blocks; ``None`` blocks.

Plain sockets stay in blocking mode and use SO_RCVTIMEO/SO_SNDTIMEO for timeouts, set only
when the value changes, so a receive costs one system call (Python's own ``settimeout`` polls
before every call). Sends use MSG_NOSIGNAL: a vanished peer is EPIPE, never a SIGPIPE death.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from typing import Final

from ipcwire._core.wire import Packed
from ipcwire._deadline import limit, timeval
from ipcwire._poll import wait_writable
from ipcwire._tls import TLS_RECORD, SharedTls

__all__ = ["ByteStream", "PartialWrite", "SocketStream", "TlsStream"]

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


class SocketStream(ByteStream):
    """A connected stream socket in blocking mode."""

    __slots__ = ("_owner", "_rcvtimeo", "_sndtimeo", "sock")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self.sock = sock
        self._owner = os.getpid()
        self._rcvtimeo: float | None = None
        self._sndtimeo: float | None = None

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv_into(self, view: memoryview, timeout: float | None) -> int:
        if timeout == 0:
            return self.sock.recv_into(view, 0, _DONTWAIT)
        if timeout != self._rcvtimeo:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval(timeout))
            self._rcvtimeo = timeout
        return self.sock.recv_into(view)

    def send_all(self, data: Packed, timeout: float | None) -> None:
        sock = self.sock
        if timeout != self._sndtimeo:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval(timeout or None))
            self._sndtimeo = timeout
        # timeout=0: never block (SO_SNDTIMEO 0 would mean "forever"), so MSG_DONTWAIT
        flags = _NOSIGNAL | _DONTWAIT if timeout == 0 else _NOSIGNAL
        if type(data) is tuple:
            self._sendmsg_all(list(data), flags)
            return
        if timeout is None:
            sock.sendall(data, _NOSIGNAL)  # type: ignore[arg-type]
            return
        view = memoryview(data)  # type: ignore[arg-type]
        sent = 0
        total = view.nbytes
        try:
            while sent < total:
                sent += sock.send(view[sent:], flags)
        except BlockingIOError:
            if sent:
                raise PartialWrite(sent) from None
            raise

    def _sendmsg_all(self, parts: list[bytes | bytearray | memoryview], flags: int) -> None:
        views = [memoryview(p) for p in parts]
        sent_total = 0
        try:
            while views:
                n = self.sock.sendmsg(views, (), flags)
                sent_total += n
                while views and n >= views[0].nbytes:
                    n -= views[0].nbytes
                    views.pop(0)
                if views and n:
                    views[0] = views[0][n:]
        except BlockingIOError:
            if sent_total:
                raise PartialWrite(sent_total) from None
            raise

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


def close_fd(fd: int) -> None:
    """Close an fd, ignoring "already closed"."""
    try:
        os.close(fd)
    except OSError:
        pass

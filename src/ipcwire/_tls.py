"""A TLS socket that one thread may read while another writes (the blocking drivers).

OpenSSL forbids two threads to use one SSL object at once (its maintainers:
openssl/openssl#20446), and Python's ``ssl`` module does not stop them: a blocking
``SSLSocket`` releases the GIL inside ``SSL_read`` and ``SSL_write`` and takes no lock. A
channel read by one thread while another sends (the WebSocket library's reader thread is
always reading) breaks that rule, and with TLS 1.3 silently: a write made while the reader
handles the server's session tickets was reported as written and never sent, so a wss
client's HTTP upgrade was lost about once in 200 connections on a busy machine (the same loss
glib-networking reported, openssl/openssl#8977).

:class:`SharedTls` keeps the socket non-blocking and makes every OpenSSL call under one lock;
the waits for the socket (``poll``) happen outside it, so a reader waiting for data never
holds up a writer. Python's ssl enables no read-ahead, so what OpenSSL has not consumed is
still in the kernel and ``poll`` sees it; what it decrypted and not yet returned is tried
before every wait.
"""

from __future__ import annotations

import errno
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

from ipcwire._deadline import limit
from ipcwire._poll import wait_readable, wait_writable

__all__ = ["TLS_RECORD", "SharedTls"]

TLS_RECORD: Final = 16384  # the largest TLS record's plaintext: one OpenSSL write per record

_T = TypeVar("_T")
_UNSET: Final[Any] = object()


class SharedTls:
    """An ``ssl.SSLSocket`` (handshake done) that threads may share: one reading, others
    writing. Offers the socket calls the drivers and the websockets library make:
    ``recv``, ``recv_into``, ``send_piece`` (writes go through ``TlsStream`` or
    ``ipcwire.ws._writer``, which cut them into records), ``settimeout`` (the default wait
    of the receives), ``shutdown``, ``close``, ``fileno`` and the names. A wait that runs out
    raises :class:`TimeoutError`."""

    __slots__ = ("_lock", "_sock", "timeout")

    def __init__(self, sock: ssl.SSLSocket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._lock = threading.Lock()
        self.timeout: float | None = None

    # -- the socket's plain calls -----------------------------------------------------------
    def fileno(self) -> int:
        return self._sock.fileno()

    def getsockname(self) -> Any:
        return self._sock.getsockname()

    def getpeername(self) -> Any:
        return self._sock.getpeername()

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout

    def shutdown(self, how: int) -> None:
        """Shut the connection down (no TLS close_notify): a thread waiting on it wakes and
        reads the end of the stream. Takes no lock, so it can cut off a blocked writer."""
        socket.socket.shutdown(self._sock, how)

    def close(self) -> None:
        with self._lock:
            self._sock.close()

    # -- TLS under the lock -----------------------------------------------------------------
    def _call(self, op: Callable[[], _T], timeout: float | None) -> _T:
        """``op()`` (one non-blocking OpenSSL call) under the lock, retried after waiting
        outside it for what OpenSSL wants, until ``timeout`` (0: one try, None: no limit)."""
        timeout = limit(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                try:
                    return op()
                except ssl.SSLWantReadError:
                    wait = wait_readable
                except ssl.SSLWantWriteError:
                    wait = wait_writable
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError("timed out")
            fd = self._sock.fileno()
            if fd < 0:  # closed by another thread: poll() would ignore it and wait forever
                raise OSError(errno.EBADF, "the socket was closed")
            if not wait(fd, left):
                raise TimeoutError("timed out")

    def recv_into(self, buffer: Any, nbytes: int = 0, timeout: float | None = _UNSET) -> int:
        """Read into ``buffer``: the bytes read, 0 at the end of the stream."""
        sock = self._sock

        def op() -> int:
            try:
                return sock.recv_into(buffer, nbytes)
            except ssl.SSLZeroReturnError:  # the peer's close_notify
                return 0

        return self._call(op, self.timeout if timeout is _UNSET else timeout)

    def recv(self, bufsize: int, timeout: float | None = _UNSET) -> bytes:
        """Up to ``bufsize`` bytes; ``b""`` at the end of the stream."""
        sock = self._sock

        def op() -> bytes:
            try:
                return sock.recv(bufsize)
            except ssl.SSLZeroReturnError:
                return b""

        return self._call(op, self.timeout if timeout is _UNSET else timeout)

    def send_piece(self, piece: Any, timeout: float | None) -> None:
        """Write one piece of at most :data:`TLS_RECORD` bytes, whole. A timeout (0: one try)
        may leave it handed to OpenSSL in part: the same bytes must then be written again,
        as ``ipcwire.ws._writer`` does, or the stream is out of step (``TlsStream`` says
        ``PartialWrite``)."""
        sock = self._sock
        self._call(lambda: sock.send(piece), timeout)

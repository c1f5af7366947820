"""The blocking UDP driver's socket: blocking mode; a send with a timeout first tries without
waiting (one system call when there is room), then waits in poll(); so does a receive with a
timeout, unless the last ones had to wait, when it waits in poll() first (see
``_RETRY_EVERY``). Not SO_RCVTIMEO, which a signal handler's EINTR restarts (see
ipcwire._stream.transport)."""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from ipcwire._deadline import NO_LIMIT, limit
from ipcwire._poll import poll_ms, wait_writable
from ipcwire._turns import take_turn
from ipcwire.errors import (
    FrameTooLarge,
    IpcwireError,
    Timeout,
)
from ipcwire.udp._channel import Address, closed_error, os_error
from ipcwire.udp._socket import DatagramFormat, proc_drops

__all__ = ["TOO_LARGE", "Interrupted", "SocketIO"]

_MSG_TRUNC: Final = int(socket.MSG_TRUNC)  # plain ints: IntFlag arithmetic is slow per call
_MSG_DONTWAIT: Final = int(socket.MSG_DONTWAIT)
TOO_LARGE: Final = object()  # SocketIO.recv's datagram: it was over max_frame, and dropped
# A receive with a timeout that had to wait makes the next ones wait in poll() first (a round
# trip's reply is never there yet: a failed receive and its exception saved); every this many,
# one looks without waiting again (a burst needs no wait at all).
_RETRY_EVERY: Final = 16


class Interrupted(Exception):
    """:meth:`SocketIO.interrupt` woke a waiting ``recv(interruptible=True)``."""


class SocketIO:
    """A datagram socket in blocking mode: without a timeout the kernel waits, one system
    call as in a hand-written loop; with one, a call that would block waits in poll() for
    what is left of it. Close wakes a waiting call with ``shutdown()``; :meth:`interrupt`
    wakes it with an empty datagram sent to the socket's own address."""

    def __init__(self, sock: socket.socket, fmt: DatagramFormat, url: str) -> None:
        sock.setblocking(True)
        self.sock = sock
        self._owner = os.getpid()  # shutdown() only there: a forked child shares the socket
        self.fmt = fmt
        self.url = url
        # the channel this is the socket of, weakly (its ChannelClosed says why it closed)
        self.channel: Callable[[], object | None] = lambda: None
        self._buf = bytearray(fmt.recv_size)
        self._view = memoryview(self._buf)
        self._recv_into = sock.recvfrom_into
        self._rlock = threading.Lock()
        self._poller = select.poll()  # (used by the receiver holding _rlock only)
        self._poller.register(sock, select.POLLIN)
        self._wait_first = False  # see _RETRY_EVERY
        self._tries = 0
        self._wlock = threading.Lock()
        host, port = sock.getsockname()[:2]
        if host in ("0.0.0.0", "::"):  # noqa: S104 - reach ourselves through loopback
            host = "::1" if host == "::" else "127.0.0.1"
        self._self_addr: Address = (host, port)
        # connected: the peer's address, for the datagrams queued before connect() (below)
        self._peer: Address | None = None
        with contextlib.suppress(OSError):
            self._peer = sock.getpeername()[:2]
        self.closed = False
        self.kernel_drops = 0

    def recv(
        self,
        timeout: float | None,
        take: Callable[[memoryview], Any] | None = None,
        *,
        interruptible: bool = False,
    ) -> tuple[Any, int, Address]:
        """One datagram, its real size, and its source. The datagram is ``take(view)``,
        called while this receive still holds the socket's one buffer (a decoder: another
        thread's receive would overwrite the view as soon as this one returns); without
        ``take``, the view itself (valid until the next call: for a caller that lets one
        thread read at a time). :data:`TOO_LARGE` when it was over ``max_frame`` and dropped.
        A connected socket's are its peer's only: the kernel filters from the connect() on,
        and a datagram another address sent in the moment between bind() and connect() is
        skipped here.

        Raises:
            Timeout, ConnectionRefused (usable), ChannelClosed, ChannelBroken.
            RemoteProtocolError (or the codec's error): ``take`` failed on the datagram.
            Interrupted: ``interruptible`` and :meth:`interrupt` was called.
        """
        said = timeout
        if timeout is not None and (timeout.__class__ is not float or not timeout <= NO_LIMIT):
            timeout = limit(timeout, self.url)  # (NaN: ConfigurationError; huge: None)
        if not self._rlock.acquire(False):  # (free: the common case, without a call)
            timeout = self._take_turn(timeout, said)
        peer = self._peer
        view = self._view
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            wait = timeout
            while True:
                if self.closed:
                    raise closed_error(self.url, self.channel())
                if wait is None:
                    flags = _MSG_TRUNC
                else:
                    flags = _MSG_TRUNC | _MSG_DONTWAIT
                    if self._wait_first and wait > 0:
                        self._poll(wait)  # (then look, or time out)
                try:
                    n, addr = self._recv_into(view, 0, flags)
                except BlockingIOError:
                    addr = None
                    if wait is not None and wait > 0 and not self._wait_first:
                        self._wait_first = True  # it had to wait: next time wait first
                        self._tries = 0
                        self._poll(wait)  # (then look again, or time out)
                except OSError as exc:
                    raise self._error(exc, "receiving from") from exc
                else:
                    if self._wait_first and wait is not None:
                        self._tries += 1
                        if self._tries >= _RETRY_EVERY:  # look without waiting again, now and
                            self._wait_first = False  # then (a burst needs no wait at all)
                    if n == 0 and (addr is None or addr[:2] == self._self_addr):
                        # shut down by close(), or woken by interrupt()
                        if interruptible and addr is not None and not self.closed:
                            raise Interrupted
                    elif peer is not None and addr[:2] != peer:
                        pass  # another address sent it before connect(): not the peer's
                    elif n > self.fmt.recv_limit:
                        return TOO_LARGE, n, addr
                    elif take is None:
                        return view[:n], n, addr
                    else:
                        try:
                            return take(view[:n]), n, addr
                        except Exception as exc:  # (this caller's error: the lock goes on)
                            err = self.fmt.bad(exc)
                            if err is exc:  # already ours, naming this endpoint
                                raise
                            raise err from exc
                if deadline is not None:
                    wait = deadline - time.monotonic()
                    if wait <= 0 and addr is None:
                        raise Timeout(
                            f"no datagram at {self.url} "
                            + ("yet" if said == 0 else f"within {said} s"),
                            endpoint=self.url,
                        )
        finally:
            self._rlock.release()

    def _poll(self, wait: float) -> None:
        """Wait until a datagram (or a shutdown) is there, at most ``wait`` seconds."""
        self._poller.poll(poll_ms(wait))

    def _take_turn(self, timeout: float | None, said: float | None) -> float | None:
        """The receive lock, within ``timeout`` (receives take turns: :func:`take_turn`)."""
        return take_turn(self._rlock, timeout, self.url, said=said)

    def interrupt(self) -> None:
        """Wake a ``recv(interruptible=True)`` that waits (or the next one to wait)."""
        if not self.closed:
            with contextlib.suppress(OSError):
                self.sock.sendto(b"", self._self_addr)

    def send(self, data: Any, addr: Address | None, timeout: float | None) -> None:
        """Send one datagram (to the connected peer when ``addr`` is None).

        Raises:
            Timeout, FrameTooLarge (EMSGSIZE), ConnectionRefused, ChannelClosed, ChannelBroken.
        """
        if timeout is not None:
            timeout = limit(timeout, self.url)
        with self._wlock:
            if self.closed:
                raise closed_error(self.url, self.channel())
            flags = 0 if timeout is None else _MSG_DONTWAIT
            try:
                try:
                    if addr is None:
                        self.sock.send(data, flags)
                    else:
                        self.sock.sendto(data, flags, addr)
                except BlockingIOError:
                    if not timeout or not wait_writable(self.sock, timeout):
                        raise
                    if addr is None:  # room now (a second wait would be a second timeout)
                        self.sock.send(data, flags)
                    else:
                        self.sock.sendto(data, flags, addr)
            except BlockingIOError:
                raise Timeout(
                    f"the send buffer of {self.url} stayed full for {timeout} s",
                    endpoint=self.url,
                ) from None
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:
                    raise FrameTooLarge(
                        f"the OS refused a datagram of {len(data)} bytes to {self.url} "
                        f"(EMSGSIZE: its limit is lower here); send smaller messages",
                        size=len(data),
                        limit=self.fmt.send_limit,
                        endpoint=self.url,
                    ) from exc
                raise self._error(exc, "sending to") from exc

    def drops(self) -> int:
        """Datagrams the kernel dropped for this socket (receive buffer full), as far as the
        OS tells (Linux: /proc/net/udp)."""
        if not self.closed:
            found = proc_drops(self.sock)
            if found is not None:
                self.kernel_drops = max(self.kernel_drops, found)
        return self.kernel_drops

    def _error(self, exc: OSError, doing: str) -> IpcwireError:
        if self.closed:
            return closed_error(self.url, self.channel())
        return os_error(exc, self.url, doing)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if os.getpid() == self._owner:  # not in a forked child: its parent's socket
            with contextlib.suppress(OSError):  # wakes a waiting call (ENOTCONN if unconnected,
                self.sock.shutdown(socket.SHUT_RDWR)  # and it wakes it all the same on Linux)
        for lock in (self._rlock, self._wlock):
            if lock.acquire(timeout=1.0):
                lock.release()
        self.sock.close()

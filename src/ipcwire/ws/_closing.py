"""A closing handshake the peer never finishes is cut off after ``close_timeout``.

Once a connection's protocol expects the TCP connection to close (the peer sent a close frame
and ours went back; or this side failed the connection: an oversized message (1009), a frame
that breaks the protocol (1002)), the websockets library waits for the peer to close TCP.
It bounds that wait by ``close_timeout`` only when this side's own ``close()`` or ``send()``
started it: when the reader found it, nothing does (the threaded reader waits in ``select()``
without a timeout, the asyncio one for ``connection_lost``). A peer that then keeps its TCP
connection open (a frozen or hostile process) left ``recv()`` waiting for ever, without the
``FrameTooLarge`` or ``EndOfChannel`` it should give, and keepalive pings stop once a
connection is closing. These mixins for the library's connection classes (both drivers,
both sides) cut such a connection after ``close_timeout``; the library then ends it as for a
peer that closed without a word, and ``recv()`` raises what the close means.

A peer that missed a keepalive pong is dead, frozen or unreachable: it will not answer a
closing handshake either, yet the library waited ``close_timeout`` for one after its
"keepalive ping timeout" close frame (a frozen peer was noticed after ``ping_interval +
ping_timeout + close_timeout``, 43 s by default). That connection is cut as soon as the
close frame is written, so the channel breaks at ``ping_interval + ping_timeout``.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

from websockets.frames import CloseCode
from websockets.protocol import OPEN

__all__ = ["AioCloseBound", "SyncCloseBound"]


def keepalive_failed(protocol: Any) -> bool:
    """Whether this side closed the connection because the peer missed a keepalive pong (the
    library's reason, both drivers) and the peer has not closed it."""
    sent = protocol.close_sent
    return (
        sent is not None
        and sent.code == CloseCode.INTERNAL_ERROR
        and sent.reason == "keepalive ping timeout"
        and protocol.close_rcvd is None
    )


class SyncCloseBound:
    """For ``websockets.sync`` connections: a timer shuts the socket down (which wakes the
    reader thread with end of stream) ``close_timeout`` after a close became expected."""

    protocol: Any
    socket: Any
    shutdown_watcher: Any
    close_timeout: float | None
    _ipcwire_cut: threading.Timer | None = None
    _ipcwire_dead = False  # cut at once: the peer missed a keepalive pong

    def send_data(self) -> None:
        # The reader thread calls this after each read it processes, the library's senders
        # after each write; both with the connection's lock held.
        super().send_data()  # type: ignore[misc]
        # (close_sent is None while open: one attribute read per send on the hot path)
        if (
            self.protocol.close_sent is not None
            and not self._ipcwire_dead
            and keepalive_failed(self.protocol)
        ):
            self._ipcwire_dead = True
            self._ipcwire_shutdown()  # (after the close frame: no handshake to wait for)
            return
        if (
            self._ipcwire_cut is None
            and not self._ipcwire_dead
            and self.protocol.state is not OPEN
            and self.close_timeout is not None
            and self.protocol.close_expected()
        ):
            timer = threading.Timer(self.close_timeout, self._ipcwire_shutdown)
            timer.daemon = True
            self._ipcwire_cut = timer
            timer.start()

    def _ipcwire_shutdown(self) -> None:
        try:
            self.socket.shutdown(socket.SHUT_RDWR)
        except OSError:  # already closed
            pass

    # set when the reader thread could not start (see recv_events); the client's connect
    # raises it, translated
    ipcwire_error: OSError | None = None

    def recv_events(self) -> None:
        # The library's reader makes its selector before its loop and its error handling: out
        # of descriptors there, the thread died with a traceback, the connection ended as if
        # the peer had gone (1006), and the socket pair it watches for shutdown stayed open.
        try:
            super().recv_events()  # type: ignore[misc]
        except OSError as exc:
            self.ipcwire_error = exc
            self.close_socket()
            try:
                self.shutdown_watcher.close()  # (the reader's own end, closed by its loop)
            except OSError:
                pass

    def close_socket(self) -> None:
        timer = self._ipcwire_cut
        if timer is not None:
            timer.cancel()
        super().close_socket()  # type: ignore[misc]


class AioCloseBound:
    """For ``websockets.asyncio`` connections: the transport is aborted ``close_timeout``
    after a close became expected, unless the peer closed it first."""

    protocol: Any
    transport: Any
    loop: asyncio.AbstractEventLoop
    close_deadline: float | None
    _ipcwire_cut: asyncio.TimerHandle | None = None

    def send_data(self) -> None:
        super().send_data()  # type: ignore[misc]
        if (
            self.protocol.close_sent is not None
            and self._ipcwire_cut is None
            and keepalive_failed(self.protocol)
        ):
            self.transport.abort()  # (after the close frame: no closing handshake to wait for)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        # The library sets close_deadline (loop time) here when a close became expected;
        # only attributes are read on the way of every read
        if self.close_deadline is not None and self._ipcwire_cut is None:
            self._ipcwire_cut = self.loop.call_at(self.close_deadline, self.transport.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        timer = self._ipcwire_cut
        if timer is not None:
            timer.cancel()
        super().connection_lost(exc)  # type: ignore[misc]

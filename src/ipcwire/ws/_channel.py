"""The blocking WebSocket channel: one ``websockets.sync`` connection as an ipcwire channel."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.frames import BINARY, TEXT, CloseCode
from websockets.protocol import OPEN
from websockets.sync.connection import Connection

from ipcwire._atexit import AtExit, closes_at_exit
from ipcwire._core.codecs import Codec
from ipcwire._deadline import limit
from ipcwire._stream.transport import forked_error, watch_fork
from ipcwire._turns import take_turn
from ipcwire.channel import Channel, PeerInfo
from ipcwire.errors import IpcwireError, Timeout
from ipcwire.ws._common import DEFAULT_CLOSE_TIMEOUT, ChannelCore, check_payload, close_reason
from ipcwire.ws._fast import FastFrames
from ipcwire.ws._writer import HIGH_WATER, WriteBuffer

__all__ = ["WsChannel"]


class WsChannel(ChannelCore, Channel):
    """One WebSocket connection as an ipcwire channel (blocking)."""

    _conn: Connection
    _at_exit: AtExit | None = None  # a client's close at interpreter exit (close_at_exit)

    def __init__(
        self,
        conn: Connection,
        url: str,
        codec: Codec,
        *,
        max_frame: int,
        send_limit: int,
        peer: PeerInfo | None,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        super().__init__(conn, url, codec, max_frame=max_frame, send_limit=send_limit, peer=peer)
        self._close_timeout = close_timeout
        self._recv_lock = threading.Lock()
        self._owner = os.getpid()
        self._forked = False  # the parent's connection, in a forked child (_after_fork)
        self._writer: WriteBuffer = conn.socket  # type: ignore[assignment] # (ipcwire.ws._writer)
        self._closer: threading.Thread | None = None  # the closing after request()'s timeout
        watch_fork(self)

    # -- sending ----------------------------------------------------------------------------
    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        if self._closed:
            raise self._closed_error()
        if self._forked:
            raise self._forked_error()
        payload = check_payload(self._codec, obj, self._send_limit, self.url)
        writer = self._writer
        began = None
        if writer.queued >= HIGH_WATER:
            began = time.monotonic()
            self._wait_room(timeout)
        writer.will_flush(True)
        try:
            if not self._send_frame(payload):
                self._conn.send(payload, text=self._text)  # the library's way, and its errors
            if writer.queued:
                self._flush(_rest(timeout, began))
        except ConnectionClosed as exc:
            raise self._error(exc, sending=True) from exc
        finally:
            writer.will_flush(False)
        self._sent += 1
        self._bytes_sent += len(payload)

    def _send_frame(self, payload: Any) -> bool:
        """Write one message as one frame under the connection's lock, as the library's
        ``send`` does, without its layers (``ipcwire.ws._fast``). False when the connection
        is not plainly open for it (closing, a fragmented send going on, compression):
        then the library's ``send`` does it, or raises what it raises."""
        conn = self._conn
        protocol = conn.protocol
        if not isinstance(protocol, FastFrames) or not protocol.plain_frames():
            return False
        failure: BaseException | None = None
        with conn.protocol_mutex:
            if (
                protocol.state is not OPEN
                or protocol.expect_continuation_frame
                or getattr(conn, "send_in_progress", True)
            ):
                return False
            # built under the lock: two threads never draw the same masking key
            chunks = protocol.frame_bytes(payload, TEXT if self._text else BINARY)
            try:
                if protocol.writes:
                    conn.send_data()  # what the reader thread queued (a pong) goes first
                sendall = conn.socket.sendall
                for chunk in chunks:
                    sendall(chunk)
            except Exception as exc:
                conn.set_connection_exc(exc)  # as the library's send_context on a failed write
                failure = exc
        if failure is not None:
            conn.close_socket()
            conn.recv_events_thread.join()
            raise conn.close_exc
        return True

    def send_many(self, objs: Iterable[Any], *, timeout: float | None = None) -> None:
        if self._closed:
            raise self._closed_error()
        if self._forked:
            raise self._forked_error()
        payloads = [check_payload(self._codec, o, self._send_limit, self.url) for o in objs]
        if not payloads:
            return
        writer = self._writer
        began = None
        if writer.queued >= HIGH_WATER:
            began = time.monotonic()
            self._wait_room(timeout)
        conn = self._conn
        write = conn.protocol.send_text if self._text else conn.protocol.send_binary
        writer.will_flush(True)
        try:
            with conn.send_context():  # one lock, all frames, then one flush
                for p in payloads:
                    write(p)
            if writer.queued:
                self._flush(_rest(timeout, began))
        except ConnectionClosed as exc:
            raise self._error(exc, sending=True) from exc
        finally:
            writer.will_flush(False)
        self._sent += len(payloads)
        self._bytes_sent += sum(len(p) for p in payloads)

    def _flush(self, timeout: float | None) -> None:
        """Write what the socket could not take under the lock, without the lock (the reader
        goes on reading meanwhile), for at most ``timeout``: the message is handed over
        either way, and what is left is written by a thread (``ipcwire.ws._writer``).

        Raises:
            ConnectionClosed: the write failed (as the library's send raises it).
        """
        try:
            self._writer.flush(timeout)
        except OSError as exc:
            conn = self._conn
            with conn.protocol_mutex:
                conn.set_connection_exc(exc)
            conn.close_socket()
            conn.recv_events_thread.join()
            raise conn.close_exc from exc

    def _wait_room(self, timeout: float | None) -> None:
        """Wait (outside the connection's lock) until the socket's queue has room
        (``ipcwire.ws._writer``); nothing of the message is handed over before.

        Raises:
            ChannelClosed: ``close()`` was called meanwhile; nothing was sent.
            Timeout: the peer did not read for ``timeout`` seconds; nothing was sent.
        """
        sock = self._writer
        room = sock.wait_room(timeout)
        if self._closed:  # (close() ends the wait: ipcwire.ws._writer)
            raise self._closed_error()
        if not room:
            raise Timeout(
                f"send to {self.url} timed out: the peer is not reading, or the network is "
                f"not carrying the data (a partition, a slow link): {sock.queued} bytes wait "
                f"for it. Nothing of this message was sent; the channel stays usable",
                endpoint=self.url,
            )

    # -- receiving --------------------------------------------------------------------------
    def recv(self, *, timeout: float | None = None) -> Any:
        left = self._take_turn(timeout)
        try:
            data = self._recv_raw(left, timeout)
        finally:
            self._recv_lock.release()
        self._received += 1
        self._bytes_received += len(data)
        return self._decode(data)

    def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        decode = self._decode
        left = self._take_turn(timeout)
        try:
            data = self._recv_raw(left, timeout)
            out = [decode(data)]
            nbytes = len(data)
            recv = self._conn.recv
            while max_messages is None or len(out) < max_messages:
                try:
                    data = recv(0, decode=False)
                except (TimeoutError, ConnectionClosed):
                    break  # the next recv() reports the end
                nbytes += len(data)
                try:
                    out.append(decode(data))
                except IpcwireError as exc:  # its error comes next, in its place
                    self._deferred = exc
                    break
        finally:
            self._recv_lock.release()
        self._received += len(out)
        self._bytes_received += nbytes
        return out

    def _take_turn(self, timeout: float | None) -> float | None:
        """The receive lock, within ``timeout`` (receives take turns: :func:`take_turn`)."""
        if self._forked:  # (first: a parent's thread may have held the lock at the fork)
            raise self._forked_error()
        return take_turn(self._recv_lock, timeout, self.url)

    def _recv_raw(self, timeout: float | None, said: float | None) -> bytes:
        """The next message's bytes within ``timeout`` (what is left of the caller's,
        ``said``: for the message)."""
        if self._closed:
            raise self._closed_error()
        if self._deferred is not None:
            exc, self._deferred = self._deferred, None
            raise exc
        try:
            return self._conn.recv(None if timeout is None else limit(timeout), decode=False)
        except TimeoutError:
            raise self._recv_timeout(said) from None
        except ConnectionClosed as exc:
            raise self._error(exc, sending=False) from exc

    # -- the rest ---------------------------------------------------------------------------
    def close_at_exit(self) -> None:
        """A client: closed at interpreter exit if the program never closes it (a module
        global, a script whose last line is a send), with the closing handshake
        (ipcwire._atexit). Before, the server got every message and then ChannelBroken (1006,
        "lost without a closing handshake"), as if the client had crashed, where a Unix
        socket's server sees a clean end."""
        self._at_exit = closes_at_exit(self)

    def close(self) -> None:
        if self._at_exit is not None:
            self._at_exit.cancel()
        closer = self._closer
        if closer is not None:  # request()'s timeout closed it: its handshake goes on
            if closer is not threading.current_thread():
                closer.join()  # (bounded by close_timeout)
            return
        if self._closed:
            return
        self._closed = True
        self._shut()

    def _close_for_timeout(self) -> None:
        """After request()'s timeout (or an interrupt): closed now, the closing handshake in
        a thread, so that the Timeout comes when ``timeout=`` passes, not ``close_timeout``
        later (a peer behind a partition or a slow link never answers, or answers late). A
        later close() waits for that thread; so does the interpreter's exit (not a daemon:
        the peer gets its close frame, bounded by ``close_timeout``)."""
        if self._closed or os.getpid() != self._owner:
            self.close()
            return
        self._closed = True
        closer = threading.Thread(target=self._shut, name=f"ipcwire close {self.url}")
        try:
            closer.start()
        except RuntimeError:  # at the process's thread limit: cut, no handshake
            self._writer.stop()
            self._writer.cut()
            self._conn.close_socket()
            return
        self._closer = closer

    def _shut(self) -> None:
        """close() once ``_closed`` is set: the closing handshake, or the cut."""
        conn = self._conn
        writer = self._writer
        if os.getpid() != self._owner:
            # A forked child closing its copy: the connection is its parent's. No closing
            # handshake, no shutdown(2) (either would end it for the parent): our fd only.
            writer.sock.close()
            return
        # A send in another thread waiting for room ends now (ChannelClosed, nothing sent).
        # One writing its message part-way to a peer that does not read can only be stopped
        # by cutting the connection (the close frame cannot go out before the rest of that
        # message): the peer gets the messages before it, whole, then the end.
        if writer.stop():
            conn.close_socket()
            return
        # (Writes never wait under the connection's lock, ipcwire.ws._writer; should one
        # hold it anyway, the closing handshake cannot be written: cut, bounded.)
        if not conn.protocol_mutex.acquire(timeout=self._close_timeout):
            writer.cut()
            conn.close_socket()
            return
        conn.protocol_mutex.release()
        # the closing handshake, bounded by close_timeout; 1011 after an exception
        if self._close_reason:
            conn.close(CloseCode.INTERNAL_ERROR, self._close_reason)
        else:
            conn.close()

    def _close_after(self, exc: BaseException | None) -> None:
        self._close_reason = close_reason(exc)
        self.close()

    # -- across fork() (ipcwire._stream.transport.watch_fork) ---------------------------------
    def _after_fork(self) -> None:
        """In a child this process forked: the connection is the parent's. Every send and
        receive refuses from now on, before anything is written, read or locked."""
        self._forked = True
        self.__dict__.pop("_ipcwire_turns", None)  # request()'s turns: maybe a parent's thread's

    def _forked_error(self) -> IpcwireError:
        if self._closed:  # (closed in the child: Closed wins)
            return self._closed_error()
        return forked_error(self.url, self._owner)


def _rest(timeout: float | None, began: float | None) -> float | None:
    """What is left of a send's ``timeout`` after waiting for room since ``began`` (None:
    it did not wait)."""
    if timeout is None or began is None:
        return timeout
    return max(timeout - (time.monotonic() - began), 0.0)

"""Writes of a blocking WebSocket connection that never block under the connection's lock.

``websockets.sync`` writes to the socket while it holds the connection's lock, and its reader
thread needs that lock to handle what arrives. So a send blocked on a full socket kept its own
side from reading: when both peers sent more than the socket buffers hold at once (each
receiving in another thread), neither read and both waited until their send timeouts ran out
(200 messages of 256 KiB each way stalled for 30 s; tcp did it in 0.3 s).

:class:`WriteBuffer` is the socket the connection writes to. Under the lock, a write goes to
the socket only as far as it takes it without waiting (the usual case: all of it, one system
call); the rest waits in a queue. The channel's sender then writes that queue itself, after it
let go of the lock (:meth:`WriteBuffer.flush`: waiting for the socket there is harmless, the
reader goes on reading), so the socket paces the sender as before. What others leave queued
(the reader's pongs, the library's pings and closing frame) is written by a flusher thread
started for it. A sender first waits for the queue to drop under :data:`HIGH_WATER`
(:meth:`WriteBuffer.wait_room`), so a send that times out there handed nothing over.

The channel's ``close()`` from another thread ends the senders' waits at once
(:meth:`WriteBuffer.stop`): a sender waiting for room returns, having handed nothing over; a
sender writing a message part-way (the peer does not read) can only be stopped by cutting the
connection, since the closing frame cannot go out before the rest of that message. Closing
the socket shuts it down first: a closed descriptor does not wake a ``poll()`` that waits on
it (which would also hold the connection open as long as it waits).

Pongs do not pile up (RFC 6455 section 5.5.3: an endpoint that has not yet sent its pong to
earlier pings may answer only the most recent one). While the queue is not empty, a pong the
reader writes waits in one place, the newest in place of the others, and goes out once the
queue is empty: a peer that sends pings and never reads cannot fill this side's memory.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections import deque
from typing import Any, Final

from ipcwire._deadline import limit
from ipcwire._poll import wait_writable
from ipcwire._tls import TLS_RECORD, SharedTls
from ipcwire.errors import ResourceExhausted

__all__ = ["HIGH_WATER", "AioPongs", "WriteBuffer", "is_pong"]

HIGH_WATER: Final = 256 * 1024  # queued bytes above which a sender waits (wait_room)
_DONTWAIT: Final = socket.MSG_DONTWAIT | getattr(socket, "MSG_NOSIGNAL", 0)


def is_pong(data: object) -> bool:
    """Whether ``data`` is one whole pong frame as the library writes it (RFC 6455 section
    5.5.3: FIN and opcode 0xA, a length up to 125, a masking key from a client). A data
    frame's payload written apart from its header is over 256 KiB (``ipcwire.ws._fast``)."""
    if type(data) is not bytes or not 2 <= len(data) <= 131 or data[0] != 0x8A:
        return False
    length = data[1] & 0x7F
    return length <= 125 and len(data) == 2 + (4 if data[1] & 0x80 else 0) + length


class WriteBuffer:
    """A connected socket (plain, or :class:`ipcwire._tls.SharedTls`) whose ``sendall`` never
    waits for the peer. Every other call goes to the socket as it is."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self._tls = isinstance(sock, SharedTls)
        self._cond = threading.Condition()
        self._write = threading.Lock()  # held by whoever writes the queue to the socket
        # pieces of at most TLS_RECORD bytes, in order; the first may be owed to TLS (a write
        # that could not finish must be made again with the same bytes)
        self._pending: deque[memoryview] = deque()
        self._pong: bytes | None = None  # the newest pong, to go once _pending is empty
        self.queued = 0  # bytes in _pending (the senders' backpressure reads it)
        self._error: BaseException | None = None
        self._stopped = False  # the channel is closing: senders no longer wait (stop())
        self.flushing = 0  # senders inside flush(): their message is (partly) still queued
        self._flusher: threading.Thread | None = None
        self.url = ""  # the channel's endpoint, for errors (else the socket's peer address)
        self._local = threading.local()  # .flushes: this thread calls flush() after its write
        # the reader thread's calls, bound once (no Python layer on each read)
        self.recv = sock.recv
        self.fileno = sock.fileno
        self.settimeout = sock.settimeout

    # -- the socket's own calls -------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:  # the names, options, the rest
        return getattr(self.sock, name)

    def shutdown(self, how: int) -> None:
        self.sock.shutdown(how)

    def close(self) -> None:
        """Shut the connection down, then close the socket: a thread still waiting to write
        (the flusher, behind a peer that does not read) wakes to a failed write and ends. A
        forked child closes ``sock`` itself (a shutdown would end its parent's connection)."""
        self.cut()
        self.sock.close()

    def cut(self) -> None:
        """Shut the connection down (both ways): whoever waits on the socket wakes, writes
        fail, the reader sees the end of the stream."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # already closed, or never connected
            pass

    # -- writing ----------------------------------------------------------------------------
    def sendall(self, data: Any) -> None:
        """Write ``data`` after what is queued, now as far as the socket takes it; queue the
        rest. Called with the connection's lock held (by the library, and by ipcwire's fast
        send), so calls never overlap each other; a flush may be writing meanwhile.

        Raises:
            OSError: an earlier write failed (the connection is broken), or this one did.
        """
        if self._error is not None:
            raise self._error
        if self._pending or self._write.locked():
            if is_pong(data):  # only the newest waits (RFC 6455 5.5.3): a ping flood
                with self._cond:
                    self._pong = data
                    self._start_flusher()
                return
            rest: memoryview | None = memoryview(data).cast("B")
        elif self._tls:
            rest = self._write_now(memoryview(data).cast("B"))
        else:  # the usual case: one system call, all of it taken
            try:
                n = self.sock.send(data, _DONTWAIT)
            except BlockingIOError:
                n = 0
            if n == (data.nbytes if type(data) is memoryview else len(data)):
                return
            rest = self._write_now(memoryview(data).cast("B")[n:])
        if rest is None or not rest.nbytes:
            return
        with self._cond:
            # (no copy: what comes here is the library's or ipcwire.ws._fast's own bytes, never
            # a caller's buffer, which could change after a send with a timeout returned)
            for pos in range(0, rest.nbytes, TLS_RECORD):
                self._pending.append(rest[pos : pos + TLS_RECORD])
            self.queued += rest.nbytes
            if not getattr(self._local, "flushes", False):
                # nobody will flush this (a pong, a ping, the closing frame): a thread does
                self._start_flusher()

    def _write_now(self, view: memoryview) -> memoryview | None:
        """Write without waiting; what the socket did not take (None: all of it). For TLS,
        what is returned begins with the piece OpenSSL holds, to be written again as it is."""
        sock = self.sock
        if self._tls:
            for pos in range(0, view.nbytes, TLS_RECORD):
                try:
                    sock.send_piece(view[pos : pos + TLS_RECORD], 0)
                except TimeoutError:
                    return view[pos:]
            return None
        while view.nbytes:
            try:
                n = sock.send(view, _DONTWAIT)
            except BlockingIOError:
                return view
            view = view[n:]
        return None

    def will_flush(self, yes: bool) -> None:
        """This thread calls :meth:`flush` after its writes (so no flusher thread is needed)."""
        self._local.flushes = yes

    def flush(self, timeout: float | None = None) -> bool:
        """Write the queue to the socket, waiting for it as long as ``timeout`` allows; call it
        without the connection's lock. False when the time ran out (what is left stays
        queued, in order, and a flusher thread finishes it).

        Raises:
            OSError: a write failed (the connection is broken: the socket is shut down), or
                :meth:`stop` cut it off (the channel was closed meanwhile).
        """
        if not self._pending:
            return True
        wait = limit(timeout)
        with self._cond:
            stopped = self._stopped
            self.flushing += 1
        try:
            if stopped:
                # handed over while the channel was closing: cut the message off rather than
                # make close() wait for a peer that may not read (_drain then fails at once)
                self.cut()
            if not self._write.acquire(timeout=-1 if wait is None else wait):
                # another thread writes the queue now (a flusher, or a sender): it goes on
                failed = self._ensure_flusher()
                if failed is not None:
                    raise self._no_flusher(failed)
                return False
            try:
                done = self._drain(wait)
            finally:
                self._write.release()
        finally:
            with self._cond:
                self.flushing -= 1
        if not done:
            failed = self._ensure_flusher()
            if failed is not None:
                raise self._no_flusher(failed)
        return done

    def stop(self) -> bool:
        """The channel is closing: a sender waiting for room returns now (from
        :meth:`wait_room`), and one writing its message part-way is cut off (the connection
        is shut down, its :meth:`flush` raises). True if it cut the connection: the closing
        handshake is then over before it began."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            cut = self.flushing > 0
        if cut:
            self.cut()
        return cut

    def _ensure_flusher(self) -> RuntimeError | None:
        with self._cond:
            return self._start_flusher()

    def _start_flusher(self) -> RuntimeError | None:  # with ``_cond`` held
        """Start the thread that writes what is queued, if needed; the failure to start it
        (the process is at its limit of threads), else None. What is queued then stays
        queued, in order: the next flush (a send), or a flusher started later, writes it."""
        if (self._pending or self._pong) and self._flusher is None and self._error is None:
            flusher = threading.Thread(
                target=self._flush_thread, name="ipcwire ws writer", daemon=True
            )
            try:
                flusher.start()
            except RuntimeError as exc:  # "can't start new thread"
                return exc
            self._flusher = flusher  # (its end, under ``_cond``, waits for this)
        return None

    def _no_flusher(self, exc: RuntimeError, *, handed: bool = True) -> ResourceExhausted:
        """No thread could be started to write what is queued: ``handed``, a send's time ran
        out with part of its message unwritten; else a send waits for room behind what an
        earlier one left (and hands nothing over)."""
        where = self.url
        if not where:
            try:
                where = "the WebSocket peer {}:{}".format(*self.sock.getpeername()[:2])
            except (OSError, TypeError, IndexError):
                where = "a WebSocket peer"
        limit = (
            f"({exc}): the process is at its limit of processes/threads (ulimit -u, a "
            f"container's pids.max)"
        )
        if handed:
            said = (
                f"the peer did not take the whole message in time and no thread could be "
                f"started to write the rest {limit}. The message was handed over, not lost: "
                f"its {self.queued} bytes left are written first, in order, by the next "
                f"send() or by close(); do not send it again"
            )
        else:
            said = (
                f"{self.queued} bytes of an earlier message wait to be written and no thread "
                f"could be started to write them {limit}. Nothing of this message was sent; "
                f"send it again once threads can start"
            )
        return ResourceExhausted(
            f"send to {where}: {said}. Raise the limit, or close channels you no longer use",
            endpoint=self.url or None,
        )

    def _drain(self, timeout: float | None) -> bool:
        """Write the queue, holding ``_write``; False if ``timeout`` ran out first (what is
        left stays queued, a piece written in part as its rest)."""
        sock = self.sock
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._cond:
                if self._error is not None:  # another thread's write failed: it is gone
                    raise BrokenPipeError(
                        errno.EPIPE, f"the connection failed while writing: {self._error!r}"
                    )
                if not self._pending:
                    if self._pong is None:
                        return True
                    # the newest pong, now that the frames before it are out
                    self._pending.append(memoryview(self._pong))
                    self.queued += len(self._pong)
                    self._pong = None
                piece = self._pending[0]
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                if self._tls:
                    sock.send_piece(piece, left)  # (whole, or owed as it is)
                    written = piece.nbytes
                else:
                    written = self._send_some(piece, left)
            except TimeoutError:
                return False
            except BaseException as exc:
                with self._cond:
                    self._error = exc
                    self._pending.clear()
                    self._pong = None
                    self.queued = 0
                    self._cond.notify_all()
                try:  # the reader wakes to the end of the stream: the connection ends
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                raise
            with self._cond:
                if written == piece.nbytes:
                    self._pending.popleft()
                else:
                    self._pending[0] = piece[written:]
                self.queued -= written
                self._cond.notify_all()
            if written < piece.nbytes:
                return False

    def _send_some(self, view: memoryview, timeout: float | None) -> int:
        """Write ``view`` to the plain socket, waiting for room up to ``timeout``; how many
        bytes went (all of them unless the time ran out)."""
        sock = self.sock
        sent = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        while sent < view.nbytes:
            try:
                sent += sock.send(view[sent:], _DONTWAIT)
                continue
            except BlockingIOError:
                pass
            left = None if deadline is None else deadline - time.monotonic()
            if (left is not None and left <= 0) or not wait_writable(sock, left):
                break
        return sent

    def _flush_thread(self) -> None:
        """Write what nobody else will (a pong queued behind a full socket); ends when the
        queue is empty, a write fails, or a sender's flush took over."""
        try:
            with self._write:
                self._drain(None)
        except BaseException:  # noqa: S110 - recorded in _error; the reader sees the end
            pass
        finally:
            with self._cond:
                self._flusher = None
                self._cond.notify_all()
            if (self._pending or self._pong) and self._error is None:
                self._ensure_flusher()  # (if it cannot start, the next flush writes it)

    def wait_room(self, timeout: float | None) -> bool:
        """Wait until fewer than :data:`HIGH_WATER` bytes are queued (or a write failed, which
        the next ``sendall`` raises, or :meth:`stop` was called: the caller checks its channel
        is closed); False when ``timeout`` passed first.

        Raises:
            ResourceExhausted: nobody writes the queue (its writer thread could not start at
                the process's thread limit) and no thread can be started for it now.
        """
        if self.queued < HIGH_WATER:  # (without the lock: stale, it lets in one more at most)
            return True
        with self._cond:
            if self._flusher is None and not self._write.locked():
                # Nobody writes the queue: its flusher could not start (the thread limit).
                failed = self._start_flusher()
                if failed is not None:
                    raise self._no_flusher(failed, handed=False)
            return self._cond.wait_for(
                lambda: self.queued < HIGH_WATER or self._error is not None or self._stopped,
                limit(timeout),
            )


class AioPongs:
    """For ``websockets.asyncio`` connections: the same bound on pongs. The transport buffers
    whatever is written to it; while it is over its high-water mark (the peer does not read),
    the pongs the library writes are held, the newest in place of the others, and it is
    written once the transport has drained (RFC 6455 section 5.5.3)."""

    protocol: Any
    transport: Any
    paused: bool
    _ipcwire_pong: bytes | None = None

    def send_data(self) -> None:
        writes = self.protocol.writes
        if self.paused and writes and any(is_pong(w) for w in writes):
            kept = []
            for w in writes:
                if is_pong(w):
                    self._ipcwire_pong = w
                else:
                    kept.append(w)
            writes[:] = kept
        super().send_data()  # type: ignore[misc]

    def resume_writing(self) -> None:
        super().resume_writing()  # type: ignore[misc]
        pong, self._ipcwire_pong = self._ipcwire_pong, None
        if pong is not None and not self.transport.is_closing():
            self.transport.write(pong)  # (between two frames: writes are whole frames)

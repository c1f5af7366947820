"""The blocking channel over a byte stream (its client handshake: handshake.py).

Used by every stream mechanism (unix, tcp, and later pipes and fifos). The hot paths are
short on purpose: ``send`` is pack + one write; ``recv`` returns a frame already buffered
without any system call, and otherwise reads as much as the kernel has into the decoder's
buffer with one ``recv_into``.

On a plain socket, when the optional C extension is built, a ``FrameSender``
(``_ext/stream.c``) holds the send lock and the sent counters and writes a raw-bytes message
(4-byte header and payload) with one vectored ``sendmsg``, without giving up the GIL unless
the socket buffer is full; a ``FrameReceiver`` holds the receive lock and returns the next
raw-bytes frame from the decoder's buffer, reading once into it when it is empty. They only
ever do the common case; everything else (other codecs and framings, timeouts, partial or
oversized frames, end of stream, a closed or broken channel, errors) runs the Python code
below, which takes the same locks. ``IPCWIRE_STREAM_IMPL=python`` (or an install without the
extension) leaves the pure-Python paths alone.
"""

from __future__ import annotations

import atexit
import errno
import socket
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any, Final

from ipcwire._core.ending import end_error, error_reason, exit_reason
from ipcwire._core.framing import LengthPrefixDecoder, NdjsonDecoder, goodbye_frame
from ipcwire._core.handshake import refusal
from ipcwire._core.wire import WireFormat
from ipcwire._deadline import not_seconds
from ipcwire._oserror import GAVE_UP, gave_up, translate
from ipcwire._stream import native
from ipcwire._stream.after_end import closed_by_peer, fresh, send_error_after_end
from ipcwire._stream.linger import hand_over
from ipcwire._stream.native import native_stream_classes
from ipcwire._stream.transport import (
    _NOSIGNAL,
    ByteStream,
    PartialWrite,
    SocketStream,
    TlsStream,
    forked_error,
    watch_fork,
)
from ipcwire._turns import take_turn
from ipcwire.channel import Channel, ChannelStatistics, PeerInfo, closed_error
from ipcwire.errors import (
    ChannelBroken,
    IpcwireError,
    Timeout,
)

__all__ = ["StreamChannel", "native_stream_classes"]

# A write that met these found the peer's end (it closed, or was killed, or TCP gave it up:
# GAVE_UP, keepalive probes or resent data unanswered).
_PEER_GONE: Final = GAVE_UP | {
    errno.EPIPE,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.ENOTCONN,
    errno.ESHUTDOWN,
}

_monotonic = time.monotonic
_NOWAIT: Final = _NOSIGNAL | getattr(socket, "MSG_DONTWAIT", 0)
_TLS_GOODBYE_WAIT: Final = 0.1  # TLS cannot hand a half-written record over: wait this long


class StreamChannel(Channel):
    """A channel over a blocking :class:`ByteStream`."""

    def __init__(
        self,
        stream: ByteStream,
        wire: WireFormat,
        url: str,
        *,
        peer: PeerInfo | None = None,
        decoder: LengthPrefixDecoder | NdjsonDecoder | None = None,
    ) -> None:
        self.url = url
        self._stream = stream
        self._wire = wire
        self._pack = wire.packer
        self._decode = wire.decode
        self._decoder = decoder if decoder is not None else wire.decoder()
        self._peer = peer
        # With the extension on a plain socket, the FrameSender is the send lock (shared by
        # its fast path and the Python path) and counts what it writes itself.
        self._sender: Any = None
        self._fast_send: Any = None  # FrameSender.send: raw bytes, length framing, no timeout
        self._send_lock: Any = threading.Lock()
        raw = wire.framing == "length" and wire.is_raw
        sender_cls, receiver_cls = native.FRAME_SENDER, native.FRAME_RECEIVER
        self._writer: Any = None  # the FrameSender on a socket: writes framed data (no timeout)
        if sender_cls is not None and isinstance(stream, SocketStream):
            self._sender = sender_cls(stream.fileno(), min(wire.send_limit, 0xFFFFFFFF))
            self._send_lock = self._writer = self._sender
            if raw:
                self._fast_send = self._sender.send
        self._receiver: Any = None
        self._fast_recv: Any = None  # FrameReceiver.recv: raw bytes, length framing, no timeout
        self._recv_lock: Any = threading.Lock()
        if receiver_cls is not None and isinstance(stream, SocketStream) and raw:
            self._receiver = receiver_cls(stream.fileno(), self._decoder)
            self._recv_lock = self._receiver
            self._fast_recv = self._receiver.recv
        self._deferred: Exception | None = None  # an error met mid-batch by recv_many
        # An NDJSON client without a handshake: the first line may be the server's refusal.
        self.refusal_possible = False
        self._closed = False
        self._eof = False
        self._reason = ""  # the goodbye's: "" for a clean close (see _close_after)
        self._send_broken: IpcwireError | None = None
        self._sent = 0
        self._received = 0
        self._bytes_sent = 0
        self._bytes_received = 0
        self._fast_sendall: Any = None
        # In a forked child, the copy of a connection the parent opened (see _after_fork):
        # checked by the slow paths only (the fast ones are off then).
        self._forked = False
        self._update_fast_path()
        if self._decoder.goodbye:
            _open.add(self)  # closed at exit, if the program did not (see _close_at_exit)
        if isinstance(stream, SocketStream | TlsStream):  # (not pipes: see transport.py)
            watch_fork(self)

    # -- sending ----------------------------------------------------------------------------
    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        fast = self._fast_send
        if fast is not None and timeout is None:
            try:
                if fast(obj):
                    return
            except OSError as exc:
                raise self._explain(self._send_error(exc, timeout)) from exc
            except BaseException as exc:  # a signal handler's (KeyboardInterrupt...)
                self._interrupted(exc)
                raise
            # declined (another type, over the limit, closed or broken): the general path
        if self._forked:
            raise self._forked_error()
        data = self._pack(obj)
        with self._send_lock:
            fast = self._fast_sendall
            if fast is not None and timeout is None and type(data) is not tuple:
                # The hot path: plain blocking socket, no send timeout set, one whole buffer,
                # through the native sender when it is built (it counts what it writes).
                try:
                    fast(data)
                except OSError as exc:
                    raise self._explain(self._send_error(exc, timeout)) from exc
                except BaseException as exc:
                    self._interrupted(exc, exact=self._writer is not None)
                    raise
                if self._writer is None:
                    self._sent += 1
                    self._bytes_sent += len(data)
                return
            self._write(data, 1, timeout)

    def send_many(self, objs: Iterable[Any], *, timeout: float | None = None) -> None:
        if self._forked:
            raise self._forked_error()
        items = objs if isinstance(objs, list | tuple) else list(objs)
        if not items:
            return
        data = self._wire.pack_many(items)
        with self._send_lock:
            self._write(data, len(items), timeout)

    def _write(self, data: Any, count: int, timeout: float | None) -> None:
        if self._closed:
            raise closed_error(self)
        if self._send_broken is not None:
            raise self._explain(fresh(self._send_broken))  # (not the kept object: see fresh)
        # Without a timeout on a plain socket, the native sender writes (it knows whether an
        # interrupted write wrote anything, and counts what it writes).
        native = self._writer if timeout is None else None
        try:
            if native is not None:
                native.write(data, count)
            else:
                self._stream.send_all(data, timeout)
        except IpcwireError:  # the stream's own words (first: ipcwire's Timeout is an OSError)
            raise
        except OSError as exc:
            raise self._explain(self._send_error(exc, timeout)) from exc
        except BaseException as exc:  # a signal handler's (KeyboardInterrupt...)
            self._interrupted(exc, exact=native is not None)
            raise
        finally:
            self._update_fast_path()
        if native is not None:
            return
        self._sent += count
        if type(data) is tuple:
            self._bytes_sent += len(data[0]) + memoryview(data[1]).nbytes
        else:
            self._bytes_sent += len(data)

    def _update_fast_path(self) -> None:
        """Allow the direct sendall only while it is exactly right: a plain socket (a
        blocking one: timeouts wait in poll(), never in the kernel), a channel neither
        closed nor broken."""
        stream = self._stream
        ok = (
            isinstance(stream, SocketStream)
            and not self._closed
            and self._send_broken is None
            and not self._forked
        )
        if not ok:
            self._fast_sendall = None
        elif self._writer is not None:
            self._fast_sendall = self._writer.write  # exact about a torn write, and counts
        else:
            sendall = stream.sock.sendall  # type: ignore[attr-defined]
            self._fast_sendall = lambda data: sendall(data, _NOSIGNAL)
        if not ok and self._sender is not None and (self._closed or self._send_broken):
            self._sender.disable()

    def _after_fork(self) -> None:
        """In a child this process forked: this channel is the parent's connection. Every
        send and receive refuses from now on (``_forked_error``), before anything is written,
        read or locked; the fast paths are off (the C sender and receiver are the child's
        copies: disabling them leaves the parent's alone). ``close()`` closes only the
        child's descriptor, and the child's exit says no goodbye (``_say_goodbye``)."""
        self._forked = True
        self._fast_send = self._fast_recv = self._fast_sendall = None
        if self._sender is not None:
            self._sender.disable()
        if self._receiver is not None:
            self._receiver.disable()
        _open.discard(self)
        # request()'s turn lock (ipcwire.channel): a parent's thread may have held it
        self.__dict__.pop("_ipcwire_turns", None)

    def _forked_error(self) -> IpcwireError:
        if self._closed:  # (closed in the child: Closed wins)
            return closed_error(self)
        owner = getattr(self._stream, "_owner", 0)
        return forked_error(self.url, owner)

    def _interrupted(self, exc: BaseException, *, exact: bool = True) -> None:
        """A send was stopped by ``exc``, raised by a signal handler (KeyboardInterrupt, a
        SIGTERM handler's SystemExit) while it waited for room. With part of a message
        written the stream is out of step: sending is over for this channel. The native
        sender knows whether it wrote anything (``exact``); Python's sendall and our own
        loops cannot say, so there any interruption counts (the send lock is still held)."""
        sender = self._sender
        if exact and (sender is None or not sender.torn):
            return  # nothing of the message went out: the channel goes on
        self._send_broken = self._torn_error(exc, exact)
        self._update_fast_path()

    def _torn_error(self, exc: BaseException | None, exact: bool) -> ChannelBroken:
        what = type(exc).__name__ if exc is not None else "an error"
        maybe = "" if exact else ", or before it wrote anything (this path cannot tell which)"
        return ChannelBroken(
            f"an earlier send to {self.url} was interrupted part-way through a message by "
            f"{what}{maybe}; the stream is out of step, so open a new channel",
            endpoint=self.url,
        )

    def _send_error(self, exc: OSError, timeout: float | None) -> IpcwireError:
        """The error for a failed send (and poison sending if a message was cut)."""
        self._fast_sendall = None
        sender = self._sender
        if sender is not None and sender.torn and not isinstance(exc, PartialWrite):
            if exc.errno in _PEER_GONE:
                # this send's own write met the peer's end part-way through the message (it
                # was killed): say that, and send no more
                if self._send_broken is None:
                    self._send_broken = gave_up(exc, self.url, "sending to") or translate(
                        exc, self.url, "sending to"
                    )
                return self._send_broken
            # another thread's send was torn (the native sender disabled itself)
            if self._send_broken is None:
                self._send_broken = self._torn_error(None, True)
            return self._send_broken
        if isinstance(exc, PartialWrite):
            self._send_broken = ChannelBroken(
                f"an earlier send to {self.url} timed out part-way through a message; the "
                f"stream is out of step, so open a new channel",
                endpoint=self.url,
            )
            return Timeout(
                f"send to {self.url} timed out after {exc.written} bytes (the peer is not "
                f"reading); the channel cannot be used for sending any more",
                endpoint=self.url,
            )
        if isinstance(exc, BlockingIOError | TimeoutError) and exc.errno != errno.ETIMEDOUT:
            return Timeout(
                f"send to {self.url} did not start within {timeout} s: the peer is not reading "
                f"and the buffers are full; nothing was sent",
                endpoint=self.url,
            )
        if self._closed:
            return closed_error(self)
        if exc.errno in _PEER_GONE and self._peer_said_goodbye():
            # (a server that finished and one that was killed said the same: "broken pipe")
            self._send_broken = closed_by_peer(self.url)
            return self._send_broken
        return self._os_error(exc, "sending to")

    def _peer_said_goodbye(self) -> bool:
        """A send met the peer's end: whether the peer had closed the channel cleanly, its
        goodbye being the next thing to receive (read without waiting, under the receive lock
        when it is free; nothing is consumed, so the next ``recv`` raises EndOfChannel)."""
        dec = self._decoder
        if not isinstance(dec, LengthPrefixDecoder) or not dec.goodbye:
            return False
        if not self._recv_lock.acquire(False):
            return False
        try:
            for _ in range(4):  # a goodbye is small: one read, unless a message came first
                if dec.clean_goodbye_next() or self._eof or dec.ended is not None:
                    break
                try:
                    n = self._stream.recv_into(dec.get_buffer(), 0)
                except OSError:
                    break
                if n == 0:
                    self._eof = True
                    break
                dec.buffer_updated(n)
            return dec.clean_goodbye_next()
        finally:
            self._recv_lock.release()

    # -- receiving --------------------------------------------------------------------------
    def recv(self, *, timeout: float | None = None) -> Any:
        fast = self._fast_recv
        if fast is not None and timeout is None:
            try:
                obj = fast()
            except OSError as exc:
                if self._closed:
                    raise closed_error(self) from None
                raise self._explain(self._os_error(exc, "receiving from")) from exc
            if obj is not None:
                return obj
            # None: nothing it could finish on its own; the general path below decides
        left = self._take_recv_lock(timeout)
        try:
            if self._closed:
                raise closed_error(self)
            if self._deferred is not None:
                self._raise_deferred()
            frame = self._decoder.next_frame()
            if frame is None:
                frame = self._fill(left, timeout)
            self._received += 1
            self._bytes_received += len(frame)
            if self.refusal_possible:
                return self._first(self._decode(frame))
            return self._decode(frame)
        finally:
            self._recv_lock.release()

    def _take_recv_lock(self, timeout: float | None) -> float | None:
        """The receive lock, within ``timeout`` (receives take turns: :func:`take_turn`)."""
        if self._forked:  # (first: a parent's thread may have held the lock at the fork)
            raise self._forked_error()
        return take_turn(self._recv_lock, timeout, self.url)

    def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        left = self._take_recv_lock(timeout)
        try:
            if self._closed:
                raise closed_error(self)
            if self._deferred is not None:
                self._raise_deferred()
            dec = self._decoder
            decode = self._decode
            frame = dec.next_frame()
            if frame is None:
                frame = self._fill(left, timeout)
            out = [decode(frame) if not self.refusal_possible else self._first(decode(frame))]
            nbytes = len(frame)
            if self._receiver is not None:
                # raw bytes: the rest of what is buffered, parsed in C (None: the end, or a
                # frame the general path must see, such as an oversized one)
                take = self._receiver.take
                while max_messages is None or len(out) < max_messages:
                    m = take()
                    if m is None:
                        break
                    nbytes += len(m)
                    out.append(m)
            while max_messages is None or len(out) < max_messages:
                try:
                    frame = dec.next_frame()
                except IpcwireError as exc:
                    self._defer(exc)  # return what came before it; raise it next time
                    break
                if frame is None:
                    break
                nbytes += len(frame)
                try:
                    out.append(decode(frame))
                except Exception as exc:  # a codec's own error too: never lose the batch
                    self._defer(exc)
                    break
            self._received += len(out)
            self._bytes_received += nbytes
            return out
        finally:
            self._recv_lock.release()

    def _first(self, obj: Any) -> Any:
        """The first message, unless it is the server's refusal (then raise that)."""
        self.refusal_possible = False
        err = refusal(obj, self.url)
        if err is not None:
            raise err
        return obj

    def _defer(self, exc: Exception) -> None:
        """Keep an error met after other messages of a batch, for the next receive call."""
        self._deferred = exc
        self._fast_recv = None  # the C path must not skip past it

    def _raise_deferred(self) -> None:
        exc = self._deferred
        assert exc is not None
        self._deferred = None
        if self._receiver is not None:
            self._fast_recv = self._receiver.recv
        raise self._explain(exc) if isinstance(exc, IpcwireError) else exc

    def _fill(self, timeout: float | None, said: float | None = None) -> memoryview:
        """Read until a whole frame is buffered; return it. ``said``: the caller's timeout,
        for the messages (``timeout`` is what is left of it)."""
        said = timeout if said is None else said
        dec = self._decoder
        stream = self._stream
        try:
            deadline = None if not timeout else _monotonic() + timeout
        except TypeError:  # timeout="1": checked here, where it is first added (no cost else)
            raise not_seconds(said, self.url) from None
        wait = timeout
        while True:
            if self._eof or dec.ended is not None:
                self._raise_eof()
            try:
                n = stream.recv_into(dec.get_buffer(), wait)
            except OSError as exc:
                if self._closed:
                    raise closed_error(self) from None
                if isinstance(exc, BlockingIOError | TimeoutError) and exc.errno != errno.ETIMEDOUT:
                    raise Timeout(
                        f"no message from {self.url} "
                        + ("yet" if said == 0 else f"within {said} s"),
                        endpoint=self.url,
                    ) from exc
                # (the kernel's ETIMEDOUT: TCP gave the peer up, see _os_error)
                raise self._explain(self._os_error(exc, "receiving from")) from exc
            if n == 0:
                if self._closed:
                    raise closed_error(self)
                self._eof = True
                self._raise_eof()
            dec.buffer_updated(n)
            frame = dec.next_frame()
            if frame is not None:
                return frame
            if dec.ended is not None:
                self._raise_eof()  # the peer's goodbye: no need to wait for the stream's end
            if deadline is not None:
                wait = deadline - _monotonic()
                if wait <= 0:
                    raise Timeout(
                        f"no whole message from {self.url} within {said} s "
                        f"({dec.partial_description()} arrived)",
                        endpoint=self.url,
                    )
            elif timeout == 0:
                raise Timeout(
                    f"no whole message from {self.url} "
                    + ("yet" if said == 0 else f"within {said} s"),
                    endpoint=self.url,
                )

    def _os_error(self, exc: OSError, doing: str) -> IpcwireError:
        """The error for ``exc``, met while ``doing`` ("receiving from", "sending to"). When
        TCP gave the peer up (GAVE_UP: keepalive probes or resent data went unanswered), the
        connection is gone both ways: every later send says so in the same words, as after
        the end of the stream (the socket itself would next say "broken pipe"), as asyncio's
        channel does."""
        err = gave_up(exc, self.url, doing)
        if err is None:
            return translate(exc, self.url, doing)
        if self._send_broken is None:
            self._send_broken = send_error_after_end(err, self._decoder, self.url)
            self._update_fast_path()
        return err

    def _raise_eof(self) -> None:
        err = end_error(self._decoder, self.url)
        if self._send_broken is None:
            # The peer reads nothing more: every later send says so (a TCP socket would take
            # one more write without an error, and that message would be lost).
            gone = send_error_after_end(err, self._decoder, self.url)
            if gone is not None:
                self._send_broken = gone
                self._update_fast_path()
        raise self._explain(err)

    def _explain(self, exc: IpcwireError) -> IpcwireError:
        """The error to raise for ``exc``: here ``exc`` itself. Called only on the way out
        with an error, so a subclass can add what it knows (a child's exit status) without
        wrapping the hot paths."""
        return exc

    # -- the rest ---------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        _open.discard(self)
        self._fast_sendall = None
        rest = b""
        lock = self._send_lock
        # The goodbye frame goes after the last whole message: under the send lock, taken
        # without waiting (a send still under way is cut short by this close, and the peer
        # then rightly sees a broken channel), and never into a torn or broken stream.
        if self._decoder.goodbye and self._send_broken is None and lock.acquire(False):
            try:
                rest = self._last_words()
            finally:
                lock.release()
        if self._sender is not None:
            self._sender.disable()
        if self._receiver is not None:
            self._receiver.disable()
        stream = self._stream
        if rest and isinstance(stream, SocketStream):
            try:
                stream.sock.shutdown(socket.SHUT_RD)  # wakes a receive in another thread
            except OSError:
                pass
            hand_over(stream.sock, rest)  # the rest of the goodbye, once the peer reads
        else:
            stream.close()

    def _close_after(self, exc: BaseException | None) -> None:
        self._reason = error_reason(exc)
        self.close()

    def _goodbye_at_exit(self, reason: str) -> None:
        """The program is ending with this channel open: say goodbye, but do not close it.
        A thread still blocked in ``recv()`` (a daemon reader) stays blocked until the
        process ends, as it always did, instead of waking with ChannelClosed (and maybe a
        traceback) while the interpreter shuts down; a later send raises ChannelClosed."""
        lock = self._send_lock
        if self._closed or self._send_broken is not None or not lock.acquire(False):
            return
        try:
            self._closed = True
            _open.discard(self)
            self._fast_sendall = None
            self._reason = reason
            rest = self._last_words()
        finally:
            lock.release()
        stream = self._stream
        if rest and isinstance(stream, SocketStream):
            hand_over(stream.sock, rest)  # the exit handlers give it a second at most

    def _last_words(self) -> bytes:
        """The goodbye (unless a torn send left the stream out of step), then no more
        native sends: called with the send lock held, so that a native send waiting for it
        finds the sender disabled instead of writing a message after the goodbye (the peer
        drops what follows one); the Python path sees ``_closed`` under the lock. Returns
        what did not fit (see :meth:`_say_goodbye`)."""
        rest = b""
        if self._sender is None or not self._sender.torn:
            rest = self._say_goodbye()
        if self._sender is not None:
            self._sender.disable()
        return rest

    def _say_goodbye(self) -> bytes:
        """Write the goodbye without waiting; return what did not fit (b"": all of it, or
        nothing worth keeping: a gone peer, a TLS stream, a forked child's copy)."""
        stream = self._stream
        if not stream.owned():
            return b""  # a forked child closing its copy must not end its parent's channel
        data = goodbye_frame(self._reason)
        if isinstance(stream, SocketStream):
            try:
                n = stream.sock.send(data, _NOWAIT)
            except BlockingIOError:
                n = 0
            except OSError:
                return b""
            return data[n:]
        try:
            stream.send_all(data, _TLS_GOODBYE_WAIT)
        except (OSError, ValueError):
            pass  # a TLS peer that does not read for that long sees a broken channel
        return b""

    @property
    def wire(self) -> WireFormat:
        """The codec and framing in use (``wire.send_limit`` is the peer's max_frame)."""
        return self._wire

    def fileno(self) -> int:
        """The underlying file descriptor (for selectors); do not read or write it."""
        return self._stream.fileno()

    def statistics(self) -> ChannelStatistics:
        sender = self._sender
        receiver = self._receiver
        sent = self._sent + (sender.messages if sender is not None else 0)
        written = self._bytes_sent + (sender.nbytes if sender is not None else 0)
        framing = 4 if self._wire.framing == "length" else 1  # a header, or a newline
        return ChannelStatistics(
            messages_sent=sent,
            messages_received=self._received + (receiver.messages if receiver is not None else 0),
            bytes_sent=written - framing * sent,
            bytes_received=self._bytes_received + (receiver.nbytes if receiver else 0),
            buffered_bytes=self._decoder.buffered,
        )


_open: weakref.WeakSet[StreamChannel] = weakref.WeakSet()


def _close_at_exit() -> None:
    """Say goodbye on the channels a program left open when it exits: a clean one when it
    ends normally, one naming the exception when an uncaught exception ends it (Python sets
    ``sys.last_value`` before the exit handlers run). A process killed, or one that leaves
    with ``os._exit``, says none, and its peers see a broken channel."""
    reason = exit_reason()
    for ch in list(_open):
        ch._goodbye_at_exit(reason)


atexit.register(_close_at_exit)

"""Blocking channels over grpcio's synchronous API.

A gRPC bidirectional stream is symmetric enough that one class serves both ends. What arrives
is an iterator (the response iterator on the client, the request iterator on the server);
what is sent goes on a queue that grpcio drains through a generator (the request iterator on
the client, the response iterator on the server), bounded to ``HIGH_WATER`` bytes.

On the server, receiving without a timeout (the ``for msg in ch`` loop of a handler) reads
the iterator in the caller's thread, as grpcio's own examples do: no extra thread, no
hand-over (the server's close() ends the RPC, which wakes that reader). grpcio's iterators
cannot be read with a timeout, nor woken without ending the call, so the first ``recv`` that
has a timeout, and every ``recv`` of a client, starts a *pump* thread, which from then on
moves what arrives into an inbox (and stops reading while ``HIGH_WATER`` bytes wait there,
so gRPC's flow control slows the sender): a client's close() then wakes its reader at once
and leaves the call open until the server has read what was sent before it.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

from ipcwire import _pid
from ipcwire._core.codecs import BytesCodec, Codec, encode_message
from ipcwire._core.ending import error_reason
from ipcwire._core.wire import checked_decode, decode_taken
from ipcwire._deadline import not_seconds, seconds_left
from ipcwire._turns import take_turn
from ipcwire.channel import Channel, ChannelStatistics, PeerInfo, closed_error
from ipcwire.errors import (
    ChannelBroken,
    EndOfChannel,
    IpcwireError,
    ResourceExhausted,
)
from ipcwire.grpc._channel import (
    EXIT_DRAIN,
    EXIT_WAIT,
    HIGH_WATER,
    HIGH_WATER_MESSAGES,
    LINGER,
    LOW_WATER_MESSAGES,
    SEND_SLACK,
    OneShotCore,
    backlog,
    forked,
)
from ipcwire.grpc._grpcio import grpc
from ipcwire.grpc._protocol import (
    BATCH_BYTES,
    BATCH_MARKER,
    BYE,
    CANCEL_GRACE,
    MARKER_BYTE,
    client_cancelled,
    error_from_status,
    failed_bye,
    lost_client,
    marker_check,
    plan_batches,
    unpack_batch,
)

__all__ = ["EOF_GRACE", "SyncOneShot", "SyncStream", "no_reader_thread"]

EOF_GRACE: Final = 2.0  # after a client's half-close, how long to wait to learn how the RPC ended
_STOP: Final = object()  # ends the outgoing stream
log = logging.getLogger("ipcwire")

# Client streams closed before their server ended the RPC: what they sent may still be in
# grpcio's buffers or unread. A socket's kernel goes on delivering after its process exits;
# grpcio's buffers go with the process, so the exit waits for them (_exit_wait).
_CLOSED: set[SyncStream] = set()
_CLOSED_LOCK = threading.Lock()
_exit_hooked: list[bool] = []


# Client streams not closed yet. A program that ends without close() (a module global, a
# script's last line) had its queued messages lost with grpcio's buffers, without a word, and
# the server saw the client vanish (ChannelBroken), where a Unix socket's kernel delivers
# everything and then the end. So they are closed at exit, as close() closes them, and waited
# for as streams closed before (_exit_wait). An atexit hook, not threading's (which runs
# before the interpreter joins the program's own threads, that may still be sending):
# registered with the first client, after grpc's own exit handlers, so it runs before them.
_OPEN: weakref.WeakSet[SyncStream] = weakref.WeakSet()
_open_hooked: list[bool] = []


def _opened_client(stream: SyncStream) -> None:
    with _CLOSED_LOCK:
        if not _open_hooked:
            atexit.register(_close_open_clients)
            _open_hooked.append(True)
        _OPEN.add(stream)


def _close_open_clients() -> None:
    """At interpreter exit: close the client streams still open (then wait for them)."""
    with _CLOSED_LOCK:
        left = [st for st in _OPEN if not st.closed and st._owner == os.getpid()]
    for st in left:
        log.debug("closing %s at exit (it was never closed)", st.url)
        try:
            st.close()
        except Exception:  # exiting: one stream's failure must not stop the rest
            log.debug("closing %s at exit failed", st.url, exc_info=True)
    if left:
        _exit_wait()  # (its own hook, registered by these closes, comes too late to run)


def _closed_client(stream: SyncStream) -> None:
    with _CLOSED_LOCK:
        if not _exit_hooked:
            # registered at the first close, after grpc's own exit handlers: runs before
            # them (atexit runs the last registered first)
            atexit.register(_exit_wait)
            _exit_hooked.append(True)
        _CLOSED.add(stream)


def _exit_wait(
    *, stall: float = EXIT_WAIT, drain: float = EXIT_DRAIN, bound: float = LINGER
) -> None:
    """At interpreter exit: wait until the client streams closed last have been written and
    their servers ended the RPCs (read everything and the goodbye), as long as the writing
    moves: it gives up once nothing was written for ``stall`` seconds (a server that stopped
    reading, a dead link), or, once everything was written, after ``drain`` seconds more (what
    is in flight drains at the server's pace, unseen), or after ``bound`` in all. What that
    cuts off is lost with the process: a WARNING names each channel and what was not
    delivered."""
    began = time.monotonic()
    moved = began
    seen = -1
    while True:
        with _CLOSED_LOCK:
            open_ = [st for st in _CLOSED if not st.delivered()]
        if not open_:
            return
        now = time.monotonic()
        taken = sum(st._taken_n for st in open_) + len(open_)
        if taken != seen:
            seen, moved = taken, now
        written = all(st._taken_n == st._given_n for st in open_)
        if now - moved >= (drain if written else stall) or now - began >= bound:
            break
        time.sleep(0.02)
    waited = time.monotonic() - began
    for st in open_:
        st.warn_undelivered(waited, time.monotonic() - moved)


def no_reader_thread(url: str, exc: BaseException) -> ResourceExhausted:
    """A receive on ``url`` needs a thread to read with, and none could be started."""
    return ResourceExhausted(
        f"cannot receive from {url}: a thread to read the stream could not be started "
        f"({exc}): the process is at its limit of processes/threads (ulimit -u, a "
        f"container's pids.max). Nothing was received or lost; try again once threads end, "
        f"or raise the limit",
        endpoint=url,
    )


class SyncStream(Channel):
    """One end of an ipcwire gRPC stream (blocking); see docs/mechanisms/grpc.md.

    ``incoming`` is what grpcio gives to read; ``on_eof`` (server side, for ipcwire clients)
    ends the RPC when the client half-closes; ``call`` (client side) is the grpcio call.
    """

    def __init__(
        self,
        url: str,
        codec: Codec,
        send_limit: int,
        peer: PeerInfo | None,
        *,
        client: bool,
        incoming: Iterator[bytes] | None = None,
        on_eof: Callable[[], None] | None = None,
    ) -> None:
        self.url = url
        self._codec = codec
        self._codec_decode = checked_decode(codec, url)  # RemoteProtocolError on failure
        # ipcwire's own raw codec: bytes as they are (a subclass may encode or decode its way)
        self._raw = type(codec) is BytesCodec
        self.send_limit = send_limit
        self._peer = peer
        self._client = client
        self._incoming = incoming
        self._on_eof = on_eof
        # Whether the peer reads batches (both said so: see _protocol); the messages of the
        # last batch read wait in ``_unpacked`` for ``_next``.
        self.batches = False
        self._unpacked: deque[bytes] = deque()
        self.call: Any = None
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # ``with self._lock`` where none waits
        self._reading = threading.Lock()  # one reader at a time, direct or waiting
        self._pump: threading.Thread | None = None
        self._pump_waiting = False  # for room in the inbox (under ``_cond``)
        self._inbox: deque[bytes] = deque()
        self._queued = 0
        self._end: IpcwireError | None = None
        self._settling = False  # the end is known, but not yet whether clean (_eof_or_lost)
        self._broken: IpcwireError | None = None
        self._closed = False
        self._owner = os.getpid()
        self._out: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Bytes handed to send() and bytes grpcio took: their difference waits to be written.
        # ``_taken`` is only written by grpcio's writer (``outgoing``), without the lock.
        self._given = self._taken = 0
        self._given_n = self._taken_n = 0  # the same in messages
        self._send_waiting = 0  # senders waiting for room (under ``_cond``)
        self.read_done = threading.Event()
        self.rpc_over = threading.Event()
        # Server side: whether grpcio saw the RPC cancelled (the client's connection died);
        # whether the client ends its stream with the goodbye, and whether it came (_protocol).
        self.cancelled: Callable[[], bool] | None = None
        self.expect_bye = False
        self._bye = False
        self.on_close: Callable[[], None] | None = None
        # Why this side ends the channel after an error ("": a clean close); a server's way
        # to end its RPC with that status (set by the listener).
        self.fail_reason = ""
        self.fail_status: Callable[[str], None] | None = None
        self._sent = self._received = self._bytes_sent = self._bytes_received = 0
        if client:
            _opened_client(self)  # closed at exit if the program never does

    # -- what grpcio drives ---------------------------------------------------------------------
    def outgoing(self) -> Iterator[bytes]:
        """The messages to write, until the channel closes (grpcio iterates this). The queue
        holds messages and ``send_many``'s lists of them. When the peer reads batches, what
        is already queued behind a message goes with it, packed into gRPC messages of up to
        ``BATCH_BYTES`` (see _protocol): nothing waits to fill a batch."""
        out = self._out
        get = out.get
        while True:
            item = get()
            if type(item) is bytes and not (
                self.batches
                and ((item[:1] == MARKER_BYTE and item.startswith(BATCH_MARKER)) or out.qsize())
            ):
                # The usual case: one message, sent as it is (_took, in this frame).
                self._taken += len(item)
                self._taken_n += 1
                if self._send_waiting:
                    self._wake_senders()
                yield item
                continue
            if item is _STOP:
                yield from self._goodbye()
                return
            items, stop = self._gather(item)
            if self.batches:
                for wire, count, size in plan_batches(items, self.send_limit):
                    self._took(size, count)
                    yield wire
            else:
                for data in items:
                    self._took(len(data), 1)
                    yield data
            if stop:
                yield from self._goodbye()
                return

    def _goodbye(self) -> Iterator[bytes]:
        """A client's last message to a server that reads batches: the goodbye (_protocol),
        which tells the server this end of the stream is a close, not a lost client, or a
        failure (``fail_reason``). A failed server sets the RPC's status instead."""
        if self._client:
            if self.batches:
                yield failed_bye(self.fail_reason) if self.fail_reason else BYE
        elif self.fail_reason and self.fail_status is not None:
            self.fail_status(self.fail_reason)

    def _close_after(self, exc: BaseException | None) -> None:
        self.fail_reason = error_reason(exc)
        self.close()

    def _gather(self, first: Any) -> tuple[list[bytes], bool]:
        """The messages of ``first`` (a message or a list of them) and, when the peer reads
        batches, those queued behind it up to about ``BATCH_BYTES``; and whether the end of
        the stream was taken from the queue too."""
        items: list[bytes] = [first] if type(first) is bytes else first
        if not self.batches:
            return items, False
        items = list(items)
        size = sum(len(d) for d in items)
        get = self._out.get_nowait
        while size < BATCH_BYTES:
            try:
                nxt = get()
            except queue.Empty:
                break
            if nxt is _STOP:
                return items, True
            if type(nxt) is bytes:
                items.append(nxt)
                size += len(nxt)
            else:
                items.extend(nxt)
                size += sum(len(d) for d in nxt)
        return items, False

    def _took(self, size: int, count: int) -> None:
        """grpcio takes ``count`` messages of ``size`` bytes: wake a sender waiting for room.
        A waiting sender announces itself before it checks the room (under the lock), so it
        either sees them taken or is woken here."""
        self._taken += size
        self._taken_n += count
        if self._send_waiting:
            self._wake_senders()

    def _wake_senders(self) -> None:
        """Wake the senders waiting for room, once there is enough of it."""
        if (
            self._given - self._taken <= HIGH_WATER - SEND_SLACK
            and self._given_n - self._taken_n <= LOW_WATER_MESSAGES
        ):
            with self._cond:
                self._cond.notify_all()

    def finish(self) -> None:
        """End the RPC from this side (the server returns OK; the client half-closes)."""
        self._out.put(_STOP)

    def call_done(self, _: object = None) -> None:
        """grpcio says the RPC is over (client side): sending fails at once, waiting senders
        wake; what already arrived can still be received. The stream of what is sent ends
        too: grpcio's thread that writes it waits in ``outgoing`` otherwise, holding this
        channel, for ever if it is dropped without close()."""
        with _CLOSED_LOCK:
            _CLOSED.discard(self)  # (closed: the exit need not wait for it)
        with self._cond:
            if self._broken is None:
                self._broken = self._call_ended()
            self._cond.notify_all()
        self._out.put(_STOP)

    def _call_ended(self) -> IpcwireError:
        """Why sending fails now that the client's call is over: the status if it failed."""
        code = self.call.code()
        if getattr(code, "name", "OK") != "OK":
            err = error_from_status(code, self.call.details(), self.url, doing="sending")
            if isinstance(err, ChannelBroken):
                return err
        return ChannelBroken(
            f"cannot send to {self.url}: the server ended the channel", endpoint=self.url
        )

    def rpc_ended(self) -> bool:
        """Whether the RPC is over (server side; see :meth:`rpc_done`)."""
        return self.rpc_over.is_set()

    def rpc_done(self) -> None:
        """grpcio says the RPC is over (server side): sends fail, the generator returns."""
        self.rpc_over.set()
        if self._on_eof is None and self.cancelled is not None and self.cancelled():
            end: IpcwireError = client_cancelled(self.url)  # a plain client's cancel
        else:
            end = ChannelBroken(f"the client of {self.url} went away", endpoint=self.url)
        self.ended(end)
        self.finish()

    def ended(self, end: IpcwireError, *, rpc_over: bool = True) -> None:
        """Nothing more will arrive: receiving drains, then raises ``end``; if the RPC is
        over too, sending fails."""
        with self._cond:
            if self._end is None:
                self._end = end
            if rpc_over and self._broken is None:
                who = "the server" if self._client else "the client"
                self._broken = ChannelBroken(
                    f"cannot send to {self.url}: {who} ended the channel ({end})",
                    endpoint=self.url,
                )
            self._cond.notify_all()

    # -- reading --------------------------------------------------------------------------------
    def _next(self) -> bytes | None:
        """One message from grpcio, or None when nothing more will come (the end is then
        recorded). Only one thread reads at a time (``_reading`` or the pump)."""
        assert self._incoming is not None
        if self._unpacked:
            return self._unpacked.popleft()
        eof = False
        try:
            while True:
                msg: bytes = next(self._incoming)
                if not (self.batches and msg[:1] == MARKER_BYTE and msg.startswith(BATCH_MARKER)):
                    return msg
                items = unpack_batch(msg, self.url)
                if items:
                    self._unpacked.extend(items[1:])
                    return items[0]
                self._bye = True  # the goodbye: the end of the stream comes next
        except StopIteration:
            end: IpcwireError = EndOfChannel(f"{self.url} closed the channel", endpoint=self.url)
            eof = True
        except grpc.RpcError as exc:
            end = self._rpc_error(exc)
        except IpcwireError as exc:  # a garbled batch
            end = exc
            if self.call is not None:
                self.call.cancel()
        except Exception as exc:  # grpcio raises plain exceptions on some shutdown paths
            end = ChannelBroken(f"{self.url} broke: {exc!r}", endpoint=self.url)
        if eof and self.expect_bye:
            if not self._bye:
                end = lost_client(self.url)
            if self._on_eof is not None:
                self._on_eof()
        elif eof and self._on_eof is not None:
            end = self._eof_or_lost(end)
        elif eof and not self._client:
            end = self._eof_or_cancelled(end)
        # A plain client's half-close leaves the server free to answer; anything else, and an
        # ipcwire client's close, ends the RPC.
        self.ended(end, rpc_over=not eof or self._client or self._on_eof is not None)
        self.read_done.set()
        return None

    def _eof_or_lost(self, eof: IpcwireError) -> IpcwireError:
        """An ipcwire client's stream ended (server side): end the RPC. grpcio ends the
        request stream the same way when the client's connection dies (keepalive, a killed
        process) and only then reports the cancellation, so wait for the RPC to be over and
        ask how it ended: cancelled is ``ChannelBroken``, not a clean close."""
        assert self._on_eof is not None
        with self._cond:
            self._settling = True
        try:
            self._on_eof()
            if self.cancelled is not None and self.rpc_over.wait(EOF_GRACE) and self.cancelled():
                eof = ChannelBroken(
                    f"the client of {self.url} went away: its connection was lost",
                    endpoint=self.url,
                )
        finally:
            with self._cond:
                self._end = eof
                self._settling = False
                self._cond.notify_all()
        return eof

    def _eof_or_cancelled(self, eof: IpcwireError) -> IpcwireError:
        """A plain client's stream ended (server side): half-closed, or cancelled? grpcio
        ends the request stream the same way for both, and reports a cancel apart, a moment
        later: wait for it (``CANCEL_GRACE``) before taking the end as clean. A half-closed
        RPC goes on (the server may still answer), so the wait is the whole grace then."""
        if self.cancelled is None:
            return eof
        with self._cond:
            self._settling = True
        try:
            if self.rpc_over.wait(CANCEL_GRACE) and self.cancelled():
                eof = client_cancelled(self.url)
        finally:
            with self._cond:
                self._end = eof
                self._settling = False
                self._cond.notify_all()
        return eof

    def _rpc_error(self, exc: Any) -> IpcwireError:
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        err = error_from_status(code, details, self.url, doing="receiving")
        # grpcio's request iterator raises a bare RpcError (no code) when the client's
        # connection dies in the middle of a message (a client killed while it streams
        # large ones): that is the client going away too, as CANCELLED is.
        if not self._client and (code is None or getattr(code, "name", "") == "CANCELLED"):
            if self._on_eof is None:  # a plain client
                err = client_cancelled(self.url)
            else:
                err = ChannelBroken(f"the client of {self.url} went away", endpoint=self.url)
        err.__cause__ = exc
        return err

    def _run_pump(self) -> None:
        lock = self._lock
        cond = self._cond
        inbox = self._inbox
        while True:
            msg = self._next()
            if msg is None:
                return
            with lock:  # (``cond``'s lock: entered without a Python call)
                if self._closed:
                    continue  # draining after close() (see drain): nobody will read it
                inbox.append(msg)
                self._queued += len(msg)
                cond.notify_all()
                if self._queued > HIGH_WATER or len(inbox) > HIGH_WATER_MESSAGES:
                    self._pump_waiting = True  # (for _pop, which wakes it)
                    while (
                        self._queued > HIGH_WATER or len(inbox) > HIGH_WATER_MESSAGES
                    ) and not self._closed:
                        cond.wait()
                    self._pump_waiting = False

    def _start_pump(self) -> None:  # with ``_reading`` held
        if self._pump is None and self._unpacked:  # the rest of a batch read directly
            with self._cond:
                self._inbox.extend(self._unpacked)
                self._queued += sum(len(m) for m in self._unpacked)
                self._unpacked.clear()
        if self._pump is None and self._end is None:
            pump = threading.Thread(
                target=self._run_pump, name=f"ipcwire reader {self.url}", daemon=True
            )
            try:
                pump.start()
            except RuntimeError as exc:  # "can't start new thread": the process's limit
                # Nothing was read: what arrived stays with grpcio (or in the inbox), and
                # the next receive tries again.
                raise no_reader_thread(self.url, exc) from exc
            self._pump = pump

    def drain(self) -> None:
        """After a client's close(): read and drop what the peer still sends, until the RPC
        ends. Otherwise flow control stops the peer's writes to a client that left, and with
        them the end of its RPC (a server handler blocked in ``send``). A client's reader only
        waits on the inbox (close() woke it), so ``_reading`` is free at once.

        Not while the interpreter finalizes (a channel dropped unclosed, closed by its
        finalizer as the modules are cleared): a thread started then never runs, and
        ``Thread.start()`` waited for it for ever, so the process never exited. The process
        is ending: nothing is left to drain for."""
        if sys.is_finalizing():
            return
        with self._reading:
            try:
                self._start_pump()
            except ResourceExhausted:
                # Nothing reads what the server still sends: its RPC ends when it reads our
                # half-close (the usual case), else the LINGER watchdog cancels it.
                pass

    # -- the application's side -----------------------------------------------------------------
    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        if self._owner != _pid.current:
            raise forked(self.url, self._owner)
        if type(obj) is bytes and self._raw and len(obj) <= self.send_limit:
            data = obj  # (what encode_message gives, without its calls)
        else:
            data = encode_message(self._codec, obj, self.send_limit, self.url)
        if self.batches and data[:1] == MARKER_BYTE and data.startswith(BATCH_MARKER):
            marker_check(data, self.send_limit, self.url)
        size = len(data)
        with self._lock:
            if (
                self._closed
                or self._broken is not None
                or self._given - self._taken > HIGH_WATER  # (_full(), in this frame)
                or self._given_n - self._taken_n >= HIGH_WATER_MESSAGES
            ):
                self._wait_for_room(timeout)
            self._given += size
            self._given_n += 1
        self._out.put(data)
        self._sent += 1
        self._bytes_sent += size

    def send_many(self, objs: Iterable[Any], *, timeout: float | None = None) -> None:
        if self._owner != _pid.current:
            raise forked(self.url, self._owner)
        items = [encode_message(self._codec, o, self.send_limit, self.url) for o in objs]
        if not items:
            return
        if self.batches:
            for d in items:
                if d.startswith(BATCH_MARKER):
                    marker_check(d, self.send_limit, self.url)
        size = sum(len(d) for d in items)
        with self._cond:
            self._wait_for_room(timeout)
            self._given += size
            self._given_n += len(items)
        self._out.put(items)
        self._sent += len(items)
        self._bytes_sent += size

    def _full(self) -> bool:
        return (
            self._given - self._taken > HIGH_WATER
            or self._given_n - self._taken_n >= HIGH_WATER_MESSAGES
        )

    def _wait_for_room(self, timeout: float | None) -> None:  # with ``_cond`` held
        """Return when the channel is open and fewer than HIGH_WATER bytes and
        HIGH_WATER_MESSAGES messages wait to be written.

        Raises:
            ChannelClosed, ChannelBroken, Timeout: nothing was queued.
        """
        self._check_send()
        if not self._full():
            return
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
        except TypeError:  # (checked here, where it is first used: no cost otherwise)
            raise not_seconds(timeout, self.url) from None
        self._send_waiting += 1
        try:
            while self._full():
                self._cond.wait(
                    seconds_left(
                        deadline,
                        backlog(self.url, self._given_n - self._taken_n, self._given - self._taken),
                        self.url,
                    )
                )
                self._check_send()
        finally:
            self._send_waiting -= 1

    def _check_send(self) -> None:
        # A client's call that ends sets ``_broken`` from its done callback (``call_done``).
        if self._closed:
            raise closed_error(self)
        if self._broken is not None:
            raise self._broken

    def recv(self, *, timeout: float | None = None) -> Any:
        if self._owner != _pid.current:
            raise forked(self.url, self._owner)
        if timeout is None and self._pump is None and not self._client:
            # The common case, a loop's recv(): read grpcio's iterator in this thread. Only a
            # reader (holding ``_reading``) starts the pump or fills the inbox; ``_closed`` and
            # the end are checked again after the read (_read_direct, in this frame).
            with self._reading:
                if self._pump is None and not self._inbox and self._end is None:
                    if self._closed:
                        raise closed_error(self)
                    msg = self._next()
                    if msg is None or self._closed:
                        raise self._not_read()
                    self._bytes_received += len(msg)
                    self._received += 1
                    return msg if self._raw else self._codec_decode(memoryview(msg))
        return self._receive(1, timeout)[0]

    def recv_many(
        self, max_messages: int | None = None, *, timeout: float | None = None
    ) -> list[Any]:
        if self._owner != _pid.current:
            raise forked(self.url, self._owner)
        return self._receive(max_messages, timeout)

    def _receive(self, limit: int | None, timeout: float | None) -> list[Any]:
        # The receive lock: taken at once when free (the usual case), else in turn, within
        # the timeout (receives take turns: :func:`take_turn`).
        reading = self._reading
        left = timeout if reading.acquire(False) else take_turn(reading, timeout, self.url)
        try:
            deadline = None if left is None else time.monotonic() + left
        except TypeError:  # (checked here, where it is first used: no cost otherwise)
            reading.release()
            raise not_seconds(timeout, self.url) from None
        try:
            if self._pump is None and self._reads_itself(timeout):
                raw = [self._read_direct()]
            else:
                with self._lock:  # (``_cond``'s lock: entered without a Python call)
                    self._wait(deadline, timeout)
                    raw = self._pop(limit)
        finally:
            reading.release()
        self._received += len(raw)
        if self._raw:
            return raw
        return decode_taken(self._codec_decode, raw, self._put_back)

    def _put_back(self, raw: list[bytes]) -> None:
        """Return messages taken by ``_pop`` to the front of the inbox, in order."""
        if not raw:
            return
        n = sum(len(m) for m in raw)
        with self._cond:
            self._inbox.extendleft(reversed(raw))
            self._queued += n
            self._bytes_received -= n
        self._received -= len(raw)

    def _reads_itself(self, timeout: float | None) -> bool:  # with ``_reading``, no pump yet
        """Whether this receive reads grpcio's iterator itself (a server's, without a timeout,
        nothing in the inbox); if not, the pump is started (once it runs, ``_wait`` makes
        the same checks as this).

        Raises:
            ChannelClosed; the end, when nothing is left to receive.
        """
        with self._lock:
            if self._closed:
                raise closed_error(self)
            direct = not self._inbox and timeout is None and not self._client
            if not self._inbox and self._end is not None and not self._settling:
                raise self._end
        if direct:
            return True
        try:
            self._start_pump()
        except ResourceExhausted:
            if not self._inbox:  # (what is already here is still delivered)
                raise
        return False

    def _read_direct(self) -> bytes:
        msg = self._next()
        if msg is None or self._closed:
            raise self._not_read()
        self._bytes_received += len(msg)
        return msg

    def _not_read(self) -> IpcwireError:
        """Why a direct read gives nothing: close() meanwhile (ChannelClosed wins, and what
        was read is dropped), or the end of the stream."""
        if self._closed:
            return closed_error(self)
        assert self._end is not None
        return self._end

    def _pop(self, limit: int | None) -> list[bytes]:  # with ``_cond`` held
        inbox = self._inbox
        raw = [inbox.popleft()]
        while inbox and (limit is None or len(raw) < limit):
            raw.append(inbox.popleft())
        n = sum(len(m) for m in raw) if len(raw) > 1 else len(raw[0])
        self._queued -= n
        self._bytes_received += n
        if self._pump_waiting and self._queued <= HIGH_WATER and len(inbox) <= HIGH_WATER_MESSAGES:
            self._cond.notify_all()  # (only the pump waits for the inbox to shrink)
        return raw

    def _wait(self, deadline: float | None, said: float | None) -> None:  # with ``_cond`` held
        """Until a message is in the inbox, by ``deadline`` (``said``: the caller's timeout,
        for the Timeout)."""
        while True:
            if self._closed:
                raise closed_error(self)
            if self._inbox:
                return
            if self._end is not None and not self._settling:
                raise self._end
            if deadline is None:
                self._cond.wait()
                continue
            self._cond.wait(
                seconds_left(
                    deadline,
                    f"no message from {self.url} " + ("yet" if said == 0 else f"within {said} s"),
                    self.url,
                )
            )

    def delivered(self) -> bool:
        """Whether nothing this closed client sent can be lost any more: its RPC is over."""
        return self._broken is not None or self.call is None or self.call.done()

    def warn_undelivered(self, waited: float, idle: float) -> None:
        """The process exits with this closed client's stream not delivered: say so."""
        with _CLOSED_LOCK:
            _CLOSED.discard(self)
        if self.delivered():
            return
        # given up: the RPC is cancelled (the driver's own exit wait need not wait for it)
        self.call.cancel()
        messages = self._given_n - self._taken_n
        nbytes = self._given - self._taken
        if messages:
            what = (
                f"{messages} messages ({nbytes} bytes) sent before close() were never written, "
                f"and the server had not ended the stream, so some of those written may be "
                f"unread too. Nothing was written for {idle:.1f} s (the server does not read, "
                f"or the network does not carry the data)"
            )
        else:
            what = (
                f"everything sent before close() was written, but the server had not ended the "
                f"stream {idle:.1f} s later, so some of it may be unread (the server does not "
                f"read, or the network does not carry the data)"
            )
        log.warning(
            "exiting with %s not delivered: %s; the exit waited %.1f s in all. They are lost: "
            "wait for the server's reply before exiting, or have it read faster",
            self.url,
            what,
            waited,
        )

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        if os.getpid() != self._owner:
            return  # a forked child's copy: the RPC is its parent's, and grpc is not fork-safe
        self.finish()
        if self.on_close is not None:
            self.on_close()
        if self._client and not self.delivered():
            # The exit waits for what it sent (_exit_wait). Registered after on_close (the
            # driver's own exit wait for the goodbye, grpc/blocking.py): runs before it.
            _closed_client(self)

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            self._sent,
            self._received,
            self._bytes_sent,
            self._bytes_received,
            self._queued + sum(len(m) for m in self._unpacked),  # and the rest of a batch
        )


class SyncOneShot(OneShotCore, Channel):
    """The server's channel for one unary call: one message in, at most one reply out."""

    def __init__(
        self, url: str, codec: Codec, request: bytes, peer: PeerInfo | None, send_limit: int
    ) -> None:
        super().__init__(url, codec, request, peer, send_limit)
        self.done = threading.Event()

    def _signal(self) -> None:
        self.done.set()

    def send(self, obj: Any, *, timeout: float | None = None) -> None:
        self._reply(obj)

    def recv(self, *, timeout: float | None = None) -> Any:
        return self._take()

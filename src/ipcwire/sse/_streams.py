"""Server-side state of SSE streams, without network I/O.

A *stream* is one logical channel from the server to one client. It outlives HTTP
connections: when the client reconnects with ``Last-Event-ID: <stream>-<seq>`` the stream is
found again and what the client missed is replayed from a bounded buffer (the last
``max_events`` events, at most ``max_bytes``). When the client asks for events the buffer no
longer holds, it gets an explicit ``ipcwire-gap`` event first, never silence.

Flow control: while a client is attached, a sender waits when ``max_events`` events (or
``max_bytes``) are not yet written to its connection, so a slow reader slows the writer.
While no client is attached (it is reconnecting), sends never wait: the buffer keeps the
newest events and counts the ones it had to drop (``dropped``), which the client learns
about through the gap event when it comes back, or the stream expires after
``resume_window`` seconds. A client that says it is done (``StreamTable.release``) ends its
stream at once, and the buffer goes with it.

Locking: the serving loop's thread and the senders' threads share a stream through
``lock``; ``room`` (a condition on it) wakes blocked senders of the blocking API, asyncio
senders wait on futures resolved in the serving loop.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from ipcwire.sse._events import format_id, gap_event, parse_id

__all__ = ["EVENT_OVERHEAD", "Opened", "ServerStream", "StreamTable"]

EVENT_OVERHEAD: Final = 64  # at most "id: <32 hex>-<seq>\ndata: " and "\n\n" per event


class ServerStream:
    """One stream: event ids, the replay buffer, the attached connection (if any)."""

    def __init__(self, sid: str, *, max_events: int, max_bytes: int, send_limit: int) -> None:
        self.sid = sid
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.send_limit = send_limit
        self.lock = threading.Lock()
        self.room = threading.Condition(self.lock)
        self.seq = 0  # id of the last event appended
        # The replay buffer: the events seq - len(_datas) - len(_log) + 1 .. on the wire, in
        # order; then the data of the newest events (send_one's), which _settle formats and
        # moves to the buffer in one go when anything needs the buffer (the writer, mostly).
        self._log: list[bytes] = []
        self._log_bytes = 0
        self._datas: list[bytes] = []
        # The events appended since the writer last took them (while a client is attached):
        # always the newest ones, so the writer joins them without walking the buffer.
        self._outbox: list[bytes] = []
        # One event on the wire, from its id number and data (a line, see append).
        self._format = b"id: " + sid.encode() + b"-%d\ndata: %s\n\n"
        self.written = 0  # last event handed to the attached connection
        self.unwritten_bytes = 0
        self.generation = 0  # increases at each (re)attach; a newer connection wins
        self.attached = False
        self.peer: str | None = None
        self.transport: Any = None  # the attached connection's transport (for drop)
        self.ended: str | None = None  # the server side closed the stream (why)
        self.failed = ""  # it did so after an error: the exception's type (see _common)
        self.end_written = False
        self.broken: str | None = None  # gone: expired, released, or the listener closed
        self.released = False  # gone because its client said it is done (a clean end)
        # Wake the server side's recv(), which waits for the stream to be gone (both APIs).
        self.gone = threading.Condition(self.lock)
        self.gone_sleepers = 0  # blocking receivers waiting on gone
        self.gone_waiters: list[asyncio.Future[None]] = []
        self.expiry: asyncio.TimerHandle | None = None  # expires it while nobody is attached
        self.dropped = 0  # events evicted before any connection got them
        self._wake: Callable[[], None] | None = None  # set while the writer waits for events
        # send_one appends without waiting while seq < _room_seq and unwritten_bytes + the
        # data's size <= _room_bytes (what has_room says, kept up to date by _set_room).
        self._room_seq = self._room_bytes = -1
        self.aio_waiters: list[asyncio.Future[None]] = []
        self.sleepers = 0  # blocking senders waiting on room

    # -- senders (any thread, holding lock) -------------------------------------------------
    def has_room(self, n: int = 1, nbytes: int = 0) -> bool:
        """Whether a sender may append ``n`` events of ``nbytes`` now: always while no client
        is attached, or when nothing waits for it; else only within the buffer's limits, so
        an event the client has not got yet is never evicted (callers split batches larger
        than ``max_events``)."""
        if not self.attached or self.written >= self.seq:
            return True
        return (
            self.seq - self.written + n <= self.max_events
            and self.unwritten_bytes + nbytes <= self.max_bytes
        )

    def append(self, datas: list[bytes]) -> Callable[[], None] | None:
        """Add events; returns the writer's wake-up to call after releasing the lock.

        Each data is one line (the sending channel turns a payload's LFs into further
        ``data:`` fields): the event is ``id: <stream>-<seq>``, ``data: <data>``, a blank line.
        """
        self._settle()
        self.seq += len(datas)
        self._add(datas, 0)
        return self.take_wake()

    def _add(self, datas: list[bytes], estimated: int) -> None:
        """Format the events of ``datas`` (the last ones up to ``seq``) into the buffer; their
        ``estimated`` bytes were counted as unwritten already."""
        first = self.seq - len(datas) + 1
        ids = range(first, self.seq + 1)
        events = list(map(self._format.__mod__, zip(ids, datas, strict=True)))
        size = sum(map(len, events))
        self._log += events
        self._log_bytes += size
        self.unwritten_bytes += size - estimated
        if self.attached:
            self._outbox += events
        if len(self._log) > self.max_events or self._log_bytes > self.max_bytes:
            self._evict()

    def _settle(self) -> None:
        """Move the events :meth:`send_one` appended into the buffer."""
        datas = self._datas
        if datas:
            self._datas = []
            self._add(datas, sum(map(len, datas)) + EVENT_OVERHEAD * len(datas))

    def send_one(self, data: bytes) -> bool:
        """The usual ``send``, taking the lock itself: append one event if the stream is
        open and has room (then wake the writer, and True); False: the caller takes the
        general path, which waits for room or raises."""
        with self.lock:
            seq = self.seq
            if seq >= self._room_seq or self.unwritten_bytes + len(data) > self._room_bytes:
                return False
            self.seq = seq + 1
            self._datas.append(data)  # formatted by _settle, many at a time
            self.unwritten_bytes += len(data) + EVENT_OVERHEAD
            wake = self._wake
            if wake is not None:
                self._wake = None
        if wake is not None:
            wake()
        return True

    def _set_room(self) -> None:
        """What :meth:`send_one` may append without asking :meth:`has_room` (it may be
        stricter: the general path then asks)."""
        if self.attached and self.broken is None:
            self._room_seq = self.written + self.max_events
            self._room_bytes = self.max_bytes - EVENT_OVERHEAD
        else:  # the general path: it raises, or (nobody attached) keeps the buffer bounded
            self._room_seq = self._room_bytes = -1

    def _evict(self) -> None:
        """Keep the buffer within its limits (the newest event always stays)."""
        log = self._log
        drop = max(len(log) - self.max_events, 0)
        size = self._log_bytes - sum(map(len, log[:drop]))
        while size > self.max_bytes and drop < len(log) - 1:
            size -= len(log[drop])
            drop += 1
        if not drop:
            return
        first = self.seq - len(log) + 1  # the id of log[0]
        unwritten = first + drop - 1 - self.written  # of the events leaving, not written yet
        if unwritten > 0:
            self.dropped += min(unwritten, drop)
            self.unwritten_bytes -= sum(map(len, log[max(drop - unwritten, 0) : drop]))
            self.written = first + drop - 1  # nobody will get them from this buffer any more
            self._set_room()
        del log[:drop]
        self._log_bytes = size

    def take_wake(self) -> Callable[[], None] | None:
        """The writer's wake-up, if it is waiting (then it is not any more)."""
        wake = self._wake
        self._wake = None
        return wake

    # -- the writer (serving loop, holding lock) --------------------------------------------
    def pending(self, limit: int = 256 * 1024) -> tuple[bytes, int]:
        """The next events not yet written to the attached connection (about ``limit`` bytes,
        at least one event), and the last one's id."""
        self._settle()
        missing = self.seq - self.written
        if missing <= 0:
            return b"", self.seq
        out = self._outbox
        if len(out) >= missing and self.unwritten_bytes <= limit:  # the usual case
            chunk = b"".join(out if len(out) == missing else out[-missing:])
            out.clear()
            return chunk, self.seq
        log = self._log
        start = max(len(log) - missing, 0)
        first = self.seq - len(log) + 1  # the id of log[0]
        parts: list[bytes] = []
        size = 0
        upto = self.written
        for i in range(start, len(log)):
            ev = log[i]
            if parts and size + len(ev) > limit:
                break
            parts.append(ev)
            size += len(ev)
            upto = first + i
        keep = self.seq - upto  # the outbox holds at most the events still to write
        if len(out) > keep:
            del out[: len(out) - keep]
        return b"".join(parts), upto

    def wait_for_events(self, wake: Callable[[], None]) -> None:
        """The writer has nothing to write: the next append calls ``wake``."""
        self._wake = wake

    def mark_written(self, upto: int, nbytes: int) -> None:
        """``nbytes`` of events up to ``upto`` reached the connection: wake waiting senders."""
        if upto > self.written:
            self.written = upto
            self.unwritten_bytes = max(self.unwritten_bytes - nbytes, 0)
            self._set_room()
        self.notify_senders()

    def notify_senders(self) -> None:
        """Wake senders waiting for room (both APIs)."""
        if self.sleepers:
            self.room.notify_all()
        waiters, self.aio_waiters = self.aio_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.get_loop().call_soon_threadsafe(_resolve, fut)

    def attach(self, last_seq: int | None, peer: str | None, transport: Any) -> tuple[int, bytes]:
        """A connection takes the stream over; returns its generation and what to write first
        (the id preamble of a new stream, or the gap event of a resume that lost events)."""
        self._settle()
        self.generation += 1
        self.attached = True
        self.peer = peer
        self.transport = transport
        wake = self.take_wake()  # a superseded writer wakes up and leaves
        if wake is not None:
            wake()
        self._outbox.clear()  # the writer takes what this connection misses from the log
        if last_seq is None:
            self._set_room()
            return self.generation, f"id: {format_id(self.sid, self.written)}\n\n".encode()
        oldest = self.seq - len(self._log) + 1
        last_seq = min(last_seq, self.seq)
        preamble = b""
        if last_seq < oldest - 1:
            lost = oldest - 1 - last_seq
            preamble = gap_event(
                format_id(self.sid, oldest - 1),
                lost,
                last_seq + 1,
                oldest - 1,
                f"the replay buffer holds the last {self.max_events} events",
            )
        self.written = max(last_seq, oldest - 1)
        missing = self.seq - self.written
        self.unwritten_bytes = sum(map(len, self._log[len(self._log) - missing :]))
        self._set_room()
        return self.generation, preamble

    def detach(self, generation: int) -> bool:
        """The connection of ``generation`` ended; True if it was the attached one."""
        if generation != self.generation or not self.attached:
            return False
        self._settle()
        self.attached = False
        self.transport = None
        self._outbox.clear()
        self._set_room()
        self.notify_senders()  # no more backpressure while nobody is attached
        return True

    def end(self, why: str) -> Callable[[], None] | None:
        """The server side closes the stream: the writer sends the end event."""
        if self.ended is None:
            self.ended = why
        return self.take_wake()

    def expire(self, why: str) -> None:
        """The stream is gone for good."""
        if self.broken is None:
            self.broken = why
        self._set_room()
        self.notify_senders()
        self.notify_gone()

    def notify_gone(self) -> None:
        """Wake the server side's receivers (the stream is gone, or the channel closed)."""
        if self.gone_sleepers:
            self.gone.notify_all()
        waiters, self.gone_waiters = self.gone_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.get_loop().call_soon_threadsafe(_resolve, fut)

    def release(self, why: str) -> tuple[Any, Callable[[], None] | None]:
        """Its client is done with the stream (it said so): gone for good, its buffer
        dropped. Returns the attached connection's transport (None if none), to close, and
        the writer's wake-up, to call after releasing the lock."""
        if self.broken is None:
            self.released = True
        self.expire(why)
        return self.forget_events()

    def forget_events(self) -> tuple[Any, Callable[[], None] | None]:
        """Drop the replay buffer (its client has every event it wants); as :meth:`release`
        returns."""
        self._log.clear()
        self._datas.clear()
        self._outbox.clear()
        self._log_bytes = self.unwritten_bytes = 0
        self.written = self.seq
        return self.transport, self.take_wake()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


@dataclass(frozen=True, slots=True)
class Opened:
    """A request attached to a stream (:meth:`StreamTable.open`)."""

    stream: ServerStream
    generation: int  # the connection's: a newer connection takes the stream over
    preamble: bytes  # what to write first (the id of a new stream, a gap event)
    is_new: bool  # a new stream (for accept())
    position: int  # the last event the connection has: its writer starts after it
    # The connection this one took the stream over from (its transport and peer), if any
    displaced: tuple[Any, str | None] | None


class StreamTable:
    """The streams of one listener, found by id (serving loop only)."""

    def __init__(self, *, max_events: int, max_bytes: int, send_limit: int) -> None:
        self.streams: dict[str, ServerStream] = {}
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._send_limit = send_limit

    def resumes(self, last_event_id: str | None) -> bool:
        """Whether a request with this ``Last-Event-ID`` attaches to a stream that exists
        (rather than opening a new one)."""
        parsed = parse_id(last_event_id) if last_event_id else None
        if parsed is None:
            return False
        stream = self.streams.get(parsed[0])
        return stream is not None and stream.broken is None

    def failure_of(self, last_event_id: str | None) -> str:
        """Why the server ended the stream ``last_event_id`` names after an error ("": it
        did not, or there is no such stream)."""
        parsed = parse_id(last_event_id) if last_event_id else None
        stream = self.streams.get(parsed[0]) if parsed is not None else None
        if stream is None:
            return ""
        with stream.lock:
            return stream.failed

    def open(
        self, last_event_id: str | None, *, peer: str | None, transport: Any, peer_limit: int | None
    ) -> Opened | None:
        """The stream a request attaches to, or None when it names a stream the server
        ended, and the client has had all of its events (answer 204: do not reconnect). A
        client that lost the end of an ended stream with its connection resumes: it gets the
        events it missed, then the end event.

        Resuming a stream that has a connection attached takes it over: the newest
        connection wins (a client whose connection half-died must get its stream back), and
        :attr:`Opened.displaced` says which connection lost it."""
        parsed = parse_id(last_event_id) if last_event_id else None
        if parsed is not None:
            stream = self.streams.get(parsed[0])
            if stream is not None and stream.broken is None:
                with stream.lock:
                    if stream.ended is not None and stream.end_written and parsed[1] >= stream.seq:
                        return None  # it has every event: nothing to resume
                    displaced = (stream.transport, stream.peer) if stream.attached else None
                    gen, preamble = stream.attach(parsed[1], peer, transport)
                    position = stream.written
                return Opened(stream, gen, preamble, False, position, displaced)
        sid = secrets.token_hex(16)
        stream = ServerStream(
            sid,
            max_events=self._max_events,
            max_bytes=self._max_bytes,
            # the peer's limit lowers ours, never raises it
            send_limit=min(peer_limit, self._send_limit)
            if peer_limit is not None
            else self._send_limit,
        )
        self.streams[sid] = stream
        with stream.lock:
            gen, preamble = stream.attach(None, peer, transport)
            position = stream.written
        if last_event_id:
            preamble = (
                gap_event(
                    format_id(sid, 0),
                    -1,
                    0,
                    0,
                    f"this server does not know the stream of event id {last_event_id[:80]!r} "
                    f"(it restarted, the stream expired, or its client closed it); a new "
                    f"stream starts",
                )
                + preamble
            )
        return Opened(stream, gen, preamble, True, position, None)

    def forget(self, stream: ServerStream) -> None:
        """Remove an expired stream."""
        if self.streams.get(stream.sid) is stream:
            del self.streams[stream.sid]

    def release(self, sid: str, why: str) -> tuple[Any, Callable[[], None] | None] | None:
        """End the stream ``sid`` now, on its client's word (see :meth:`ServerStream.release`,
        whose answer this is); None: no such stream (ended, expired, or never was). A resume
        of it is then a resume of an unknown stream."""
        stream = self.streams.get(sid)
        if stream is None or stream.broken is not None:
            return None
        if stream.ended is not None and stream.end_written:
            # The server ended it and its client read the end: kept, without its events,
            # until it expires, so that a late resume of it still hears 204 (stop).
            with stream.lock:
                return stream.forget_events()
        del self.streams[sid]
        if stream.expiry is not None:
            stream.expiry.cancel()
            stream.expiry = None
        with stream.lock:
            return stream.release(why)

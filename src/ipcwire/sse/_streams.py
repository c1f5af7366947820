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
``resume_window`` seconds.

Locking: the serving loop's thread and the senders' threads share a stream through
``lock``; ``room`` (a condition on it) wakes blocked senders of the blocking API, asyncio
senders wait on futures resolved in the serving loop.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from ipcwire.sse._events import event_bytes, format_id, gap_event, parse_id

__all__ = ["ServerStream", "StreamTable"]


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
        self._log: deque[tuple[int, bytes]] = deque()
        self._log_bytes = 0
        self.written = 0  # last event handed to the attached connection
        self.unwritten_bytes = 0
        self.generation = 0  # increases at each (re)attach; a newer connection wins
        self.attached = False
        self.peer: str | None = None
        self.transport: Any = None  # the attached connection's transport (for drop)
        self.ended: str | None = None  # the server side closed the stream (why)
        self.end_written = False
        self.broken: str | None = None  # gone: expired, or the listener closed
        self.dropped = 0  # events evicted before any connection got them
        self._wake: Callable[[], None] | None = None
        self._writer_waiting = False
        self.aio_waiters: list[asyncio.Future[None]] = []

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
        """Add events; returns the writer's wake-up to call after releasing the lock."""
        sid = self.sid
        for data in datas:
            self.seq += 1
            ev = event_bytes(format_id(sid, self.seq), data)
            self._log.append((self.seq, ev))
            self._log_bytes += len(ev)
            self.unwritten_bytes += len(ev)
        log = self._log
        while (len(log) > self.max_events or self._log_bytes > self.max_bytes) and len(log) > 1:
            seq, ev = log.popleft()
            self._log_bytes -= len(ev)
            if seq > self.written:
                self.dropped += 1
                self.unwritten_bytes -= len(ev)
                self.written = seq  # nobody will get it from this buffer any more
        return self.take_wake()

    def take_wake(self) -> Callable[[], None] | None:
        """The writer's wake-up, if it is waiting (then it is not any more)."""
        if self._writer_waiting:
            self._writer_waiting = False
            return self._wake
        return None

    # -- the writer (serving loop, holding lock) --------------------------------------------
    def pending(self, limit: int = 256 * 1024) -> tuple[bytes, int]:
        """The next events not yet written to the attached connection (about ``limit`` bytes,
        at least one event), and the last one's id."""
        missing = self.seq - self.written
        if missing <= 0:
            return b"", self.seq
        log = self._log
        start = max(len(log) - missing, 0)
        parts: list[bytes] = []
        size = 0
        upto = self.written
        for i in range(start, len(log)):
            seq, ev = log[i]
            if parts and size + len(ev) > limit:
                break
            parts.append(ev)
            size += len(ev)
            upto = seq
        return b"".join(parts), upto

    def wait_for_events(self, wake: Callable[[], None]) -> None:
        """The writer has nothing to write: the next append calls ``wake``."""
        self._wake = wake
        self._writer_waiting = True

    def mark_written(self, upto: int, nbytes: int) -> None:
        """``nbytes`` of events up to ``upto`` reached the connection: wake waiting senders."""
        if upto > self.written:
            self.written = upto
            self.unwritten_bytes = max(self.unwritten_bytes - nbytes, 0)
        self.notify_senders()

    def notify_senders(self) -> None:
        """Wake senders waiting for room (both APIs)."""
        self.room.notify_all()
        waiters, self.aio_waiters = self.aio_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.get_loop().call_soon_threadsafe(_resolve, fut)

    def attach(self, last_seq: int | None, peer: str | None, transport: Any) -> tuple[int, bytes]:
        """A connection takes the stream over; returns its generation and what to write first
        (the id preamble of a new stream, or the gap event of a resume that lost events)."""
        self.generation += 1
        self.attached = True
        self.peer = peer
        self.transport = transport
        wake = self.take_wake()  # a superseded writer wakes up and leaves
        if wake is not None:
            wake()
        if last_seq is None:
            return self.generation, f"id: {format_id(self.sid, self.written)}\n\n".encode()
        oldest = self._log[0][0] if self._log else self.seq + 1
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
        self.unwritten_bytes = sum(len(ev) for seq, ev in self._log if seq > self.written)
        return self.generation, preamble

    def detach(self, generation: int) -> bool:
        """The connection of ``generation`` ended; True if it was the attached one."""
        if generation != self.generation or not self.attached:
            return False
        self.attached = False
        self.transport = None
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
        self.notify_senders()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class StreamTable:
    """The streams of one listener, found by id (serving loop only)."""

    def __init__(self, *, max_events: int, max_bytes: int, send_limit: int) -> None:
        self.streams: dict[str, ServerStream] = {}
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._send_limit = send_limit

    def open(
        self, last_event_id: str | None, *, peer: str | None, transport: Any, peer_limit: int | None
    ) -> tuple[ServerStream, int, bytes, bool] | None:
        """The stream a request attaches to: ``(stream, generation, preamble, is_new)``, or
        None when it names a stream the server ended (answer 204: do not reconnect)."""
        parsed = parse_id(last_event_id) if last_event_id else None
        if parsed is not None:
            stream = self.streams.get(parsed[0])
            if stream is not None and stream.broken is None:
                with stream.lock:
                    if stream.ended is not None and stream.end_written:
                        return None
                    gen, preamble = stream.attach(parsed[1], peer, transport)
                return stream, gen, preamble, False
        sid = secrets.token_hex(16)
        stream = ServerStream(
            sid,
            max_events=self._max_events,
            max_bytes=self._max_bytes,
            send_limit=peer_limit if peer_limit is not None else self._send_limit,
        )
        self.streams[sid] = stream
        with stream.lock:
            gen, preamble = stream.attach(None, peer, transport)
        if last_event_id:
            preamble = (
                gap_event(
                    format_id(sid, 0),
                    -1,
                    0,
                    0,
                    f"this server does not know the stream of event id {last_event_id[:80]!r} "
                    f"(it restarted, or the stream expired); a new stream starts",
                )
                + preamble
            )
        return stream, gen, preamble, True

    def forget(self, stream: ServerStream) -> None:
        """Remove an expired stream."""
        if self.streams.get(stream.sid) is stream:
            del self.streams[stream.sid]

"""What both mq drivers' channels keep and decide without waiting.

The blocking driver (``poll``, locks) and the asyncio driver (the event loop, futures) differ
only in how they wait for a queue and for the peer's exit. The rest is here once, as
:class:`ChannelCore`, which each driver's channel subclasses: the pair of queues, the
reassembly of pieces, the messages read ahead while a send waits, the state (closed, end
marker read, peer exited, broken by a part-way send), the counters, and the errors that state
means. Nothing here waits: every queue call is ``try_send``/``try_recv``. The blocking driver
calls these methods with its send or receive lock held.

How each end learns that the other closed, even when its queue was full at the time: the end
pipe, ``_ends.py``. How it learns that the other failed (a ``with`` block or ``serve()``
handler left by an exception): the marker and the pipe carry the reason (``_proto.py``).
"""

from __future__ import annotations

import sys
from collections import deque
from typing import Any, Final

from ipcwire._core.ending import failed_error
from ipcwire._core.framing import readable_reason
from ipcwire._core.wire import WireFormat
from ipcwire.channel import ChannelStatistics, PeerInfo, closed_error
from ipcwire.errors import (
    ChannelBroken,
    EndOfChannel,
    FrameTooLarge,
    IpcwireError,
    RemoteProtocolError,
    Timeout,
)
from ipcwire.mq._ends import MAX_REASON, peer_ended, post_end, read_end, remove_life_pipe
from ipcwire.mq._proto import EOF_PRIORITY, HANDSHAKE_PRIORITY, Reassembler
from ipcwire.mq._queue import MessageQueue
from ipcwire.mq._session import close_fd

DROPPED: Final = "dropped without close(), garbage-collected"

__all__ = ["CLOSE_TIMEOUT", "CLOSE_UNSEEN", "ChannelCore"]

# How long close() waits for room for the end-of-channel marker, on a channel without an end
# pipe (one with an end pipe never waits: see _ends.py).
CLOSE_TIMEOUT: Final = 1.0
# Logged when close() gives up on a peer that does not read (its end-of-channel marker unsent).
CLOSE_UNSEEN = (
    "%s: the peer is not reading; it will not see the end of the channel until its process exits"
)


class ChannelCore:
    """One end of an mq channel, without the waiting: messages out on one queue, in on the other.

    Subclasses add ``send``/``recv``/``close`` with their waits, and may override
    :meth:`_on_eof`.
    """

    url: str

    def __init__(
        self,
        inbound: MessageQueue,
        outbound: MessageQueue,
        wire: WireFormat,
        url: str,
        *,
        peer_pid: int | None,
        pidfd: int | None,
        ends: int | None,
        tells: bool = False,
        life: str | None = None,
    ) -> None:
        self.url = url
        self._life = life  # the up name of the life pipe this end removes at close (_proto.py)
        self._in = inbound
        self._out = outbound
        self._wire = wire
        self._encode = wire.encoder
        self._decode = wire.decode
        self._raw = wire.is_raw  # bytes codec: the received bytes are the message
        self._limit = wire.send_limit
        self._msgsize = outbound.msgsize
        # a sender's messages under way: one per piece queued or read ahead, and one more
        self._asm = Reassembler(
            inbound.msgsize, wire.max_frame, url, max_partial=2 * inbound.maxmsg + 1
        )
        self._peer_pid = peer_pid
        self._peer: PeerInfo | None = PeerInfo(pid=peer_pid, address=url)
        self._pidfd = pidfd
        self._ends = ends  # the end pipe (_ends.py); None: the marker alone tells the end
        self._pending: deque[tuple[bytes, int]] = deque()  # read ahead while a send waited
        self._error: IpcwireError | None = None  # found by recv_many, raised next
        self._send_broken: ChannelBroken | None = None
        self._closed = False
        self._eof = False  # the peer's end was reached: all it sent before closing is read
        self._peer_closed = False  # the end pipe says the peer closed (its messages may wait)
        self._dead = False  # the peer process exited
        self._tells = tells  # the handshake agreed on telling a failed end (_proto.py)
        self._fail_reason = ""  # why this end closes after an error ("": a clean close)
        self._marker = b""  # the peer's end-of-channel marker (a reason after a failure)
        self._told: str | None = None  # the peer's reason, once read ("": a clean end)
        self._sent = self._received = self._bytes_sent = self._bytes_received = 0

    def _on_eof(self) -> None:
        """The peer's end-of-channel marker was just read (the asyncio driver wakes its
        waiters here)."""

    # -- sending ----------------------------------------------------------------------------
    def _check_send(self) -> None:
        """Raise what a send must raise before it sends anything."""
        if self._closed:
            raise closed_error(self)
        if self._send_broken is not None:
            raise self._send_broken
        if self._eof or self._dead or self._peer_closed:
            raise self._gone("send to")

    def _too_large(self, size: int) -> FrameTooLarge:
        return FrameTooLarge(
            f"message of {size} bytes not sent to {self.url}: over the peer's max_frame of "
            f"{self._limit} bytes; raise max_frame= on both sides",
            size=size,
            limit=self._limit,
            endpoint=self.url,
        )

    def _send_timeout(self, timeout: float | None) -> Timeout:
        """A send that found no room in time; nothing of its message was sent."""
        return Timeout(
            f"send to {self.url} timed out after {timeout} s: the peer is not reading and its "
            f"queue of {self._out.maxmsg} messages is full; nothing was sent",
            endpoint=self.url,
        )

    def _part_way(self) -> Timeout:
        """A send that timed out after part of a large message went: the channel can no
        longer send (remembered in ``_send_broken``), and the Timeout to raise now."""
        self._send_broken = ChannelBroken(
            f"an earlier send to {self.url} timed out part-way through a large "
            f"message; the queue is out of step, so open a new channel",
            endpoint=self.url,
        )
        return Timeout(
            f"send to {self.url} timed out part-way through a large message (the peer "
            f"is not reading); the channel cannot be used for sending any more",
            endpoint=self.url,
        )

    def _peer_ended(self) -> bool:
        """True once the peer closed, as far as the end pipe tells (looked at now if not yet
        known). Its messages sent before the close may still wait in the queue."""
        if not self._peer_closed and self._ends is not None and not self._closed:
            self._peer_closed = peer_ended(self._ends)
        return self._peer_closed

    def _gone(self, doing: str) -> ChannelBroken:
        if self._eof or self._peer_ended():
            why = "the peer closed its end"
        elif self._peer_pid is None:  # (in another pid namespace)
            why = "the peer process exited without closing it"
        else:
            why = f"the peer process (pid {self._peer_pid}) exited without closing it"
        return ChannelBroken(f"cannot {doing} {self.url}: {why}", endpoint=self.url)

    def _read_ahead(self, limit: int) -> bool:
        """Move inbound messages aside for recv (until ``limit`` wait there), stopping at the
        peer's end marker: how a waiting send sees that the peer closed. True when the
        inbound queue ran empty first.

        Raises:
            ChannelClosed: the inbound queue was closed.
        """
        while len(self._pending) < limit and not self._eof:
            closed = self._peer_closed  # before the queue is found empty (see _next_ready)
            got = self._in.try_recv()
            if got is None:
                if closed:
                    self._eof = True
                    self._on_eof()
                return True
            if got[1] == EOF_PRIORITY:
                self._eof = True
                self._marker = got[0]
                self._on_eof()
            else:
                self._pending.append(got)
        return False

    # -- receiving --------------------------------------------------------------------------
    def _deliver(self, data: bytes) -> Any:
        self._received += 1
        self._bytes_received += len(data)
        return data if self._raw else self._decode(memoryview(data))

    def _next_ready(self) -> tuple[bytes, int] | None:
        """The next whole message already here and its kernel priority, or None."""
        if self._error is not None:
            err, self._error = self._error, None
            raise err
        if self._asm.broken is not None:  # out of step: nothing more can be delivered
            raise self._asm.broken
        while True:
            got = self._pending.popleft() if self._pending else None
            if got is None and not self._eof:
                # Known closed *before* the queue is found empty: then every message sent
                # before the close was read (they were queued before the end pipe's byte).
                closed = self._peer_closed
                got = self._in.try_recv()
                if got is None and closed:
                    self._eof = True
                    self._on_eof()
            if got is None:
                return None
            data, prio = got
            if prio == EOF_PRIORITY:
                self._eof = True
                self._marker = data
                self._on_eof()
                continue
            if prio == HANDSHAKE_PRIORITY:
                raise RemoteProtocolError(
                    f"{self.url} sent a handshake message on an open channel", endpoint=self.url
                )
            msg = self._asm.feed(data, prio)
            if msg is not None:
                return msg, prio

    def _take_ready(self, out: list[Any], max_messages: int | None) -> list[Any]:
        """The rest of ``recv_many``: add the messages already here to ``out`` (up to
        ``max_messages`` in all). An error found on the way is raised by the next receive,
        after these messages."""
        while max_messages is None or len(out) < max_messages:
            try:
                got = self._next_ready()
            except IpcwireError as exc:
                self._error = exc
                break
            if got is None:
                break
            try:
                out.append(self._deliver(got[0]))
            except IpcwireError as exc:  # does not decode: raised next, after these messages
                self._error = exc
                break
        return out

    def _ended(self) -> ChannelBroken | EndOfChannel:
        """What a receive raises once the peer closed or exited and no whole message is left."""
        if self._asm.partial:
            return ChannelBroken(
                f"{self.url} ended in the middle of a message ({self._asm.buffered} "
                f"bytes arrived); the partial message was discarded",
                endpoint=self.url,
            )
        if self._eof or self._peer_ended():
            # (a peer that exited: nothing more can come, so a close it made is the end)
            reason = self._peer_failure()
            if reason:
                return failed_error(self.url, reason, self.url)
            return EndOfChannel(f"{self.url} closed its end", endpoint=self.url)
        return self._gone("receive from")

    def _peer_failure(self) -> str:
        """Why the peer, known to have closed, ended the channel: its reason after an error,
        or "" for a clean close. From the end pipe (read once: the blocking driver calls
        this with the receive lock held), or its marker."""
        if self._told is None:
            told = read_end(self._ends) if self._ends is not None else None
            if not told and self._marker:  # (the pipe's copy may be longer)
                told = readable_reason(self._marker[:MAX_REASON])
            self._told = told or ""
        return self._told

    # -- the rest ---------------------------------------------------------------------------
    def _post_end(self) -> bool:
        """``close()``'s message to the peer when it has an end pipe: the byte in the pipe,
        then the marker if there is room (never waiting). False without an end pipe: the
        caller waits a while for room for the marker."""
        if self._ends is None:
            return False
        post_end(self._ends, self._end_reason())
        try:
            self._out.try_send(self._end_marker(), EOF_PRIORITY)
        except IpcwireError:
            pass
        return True

    def _tell_dropped(self) -> None:
        """The channel is collected without ``close()`` (``__del__``): tell the peer that
        this end is gone, as ``close()`` would but never waiting, with the reason
        :data:`DROPPED` where the handshake agreed on reasons (the peer raises ChannelBroken,
        as on a Unix socket dropped without its goodbye); then release the queues. No thread
        uses a channel being collected. Not for a forked process's copy."""
        if not (self._eof or self._dead or self._peer_closed):
            # (the program ended with the channel open, a module global: a clean end, as a
            # Unix socket's peer sees the process's exit; not a channel dropped mid-way)
            self._fail_reason = "" if sys.is_finalizing() else DROPPED
            if not self._post_end():
                try:
                    self._out.try_send(self._end_marker(), EOF_PRIORITY)
                except IpcwireError:
                    pass
        self._close_queues()

    def _end_reason(self) -> bytes:
        """The reason this end tells when it closes (_proto.py, _ends.py): empty after a
        clean close, and to a peer that does not take failures (it would see a clean end)."""
        if not (self._tells and self._fail_reason):
            return b""
        return self._fail_reason.encode("utf-8", "replace")[:MAX_REASON]

    def _end_marker(self) -> bytes:
        """The end-of-channel marker this end closes with: the reason, within the queue's
        msgsize (empty: a clean close)."""
        return self._end_reason()[: self._msgsize]

    def _close_queues(self) -> None:
        """Close both queues, the peer's pidfd and the end pipe (the last step of ``close``)."""
        self._in.close()
        self._out.close()
        close_fd(self._pidfd)
        self._pidfd = None
        close_fd(self._ends)
        self._ends = None
        if self._life is not None:
            remove_life_pipe(self._life)
            self._life = None

    @property
    def wire(self) -> WireFormat:
        """The codec in use; ``wire.send_limit`` is the peer's max_frame."""
        return self._wire

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            messages_sent=self._sent,
            messages_received=self._received,
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
            buffered_bytes=sum(len(d) for d, _ in self._pending) + self._asm.buffered,
        )

"""A link: one connection's pair of rings, their doorbells, and the Unix socket that ties them.

:class:`Link` is the link in use: what a channel holds once the link is set up, how each side
waits and wakes the other, how a dead peer shows, and how a side ends. Making one is
``_setup``'s (the setup messages, both sides, the blocking driver), kept apart so that this
module reads as what a channel drives.

The doorbells are two Unix stream socketpairs the client creates, keeping one end of each and
giving the other to the server:

* ``data``: each side parks on its end for data (a blocking ``recv`` of the consumer of the
  ring it reads) and rings the peer's by sending one byte on the same end when it published a
  message the peer waits for;
* ``space``: the same for a producer waiting for room: it parks on its end of ``space``, and
  the consumer on the other side sends a byte on its own end when it freed what was asked for.

A side sends only when the waiting flag in the ring header says the peer is parked, and a
parked side sleeps in that one ``recv`` (no ``poll`` first): one system call to sleep and to
wake. Ringing on the very socket this side then parks on for the answer is deliberate: when the
peer reads the byte, the kernel tells the sender's end that its send buffer has room again,
which wakes the sender's parked ``recv`` early, while the peer is still working on the
answer; the real wake-up then finds a CPU that is already awake (measured: a Python round trip
about a fifth faster than with eventfds or with one socketpair per direction). When a side's
process ends, its ends close and a parked ``recv`` returns 0 bytes: the peer is gone.

After the setup the socket carries nothing. It stays open as the liveness signal: when the
peer's process ends, however it ends, the kernel closes its end, the socket hangs up, and a
parked waiter's ``poll`` wakes at once (a spinning waiter asks every millisecond). That is how
a dead peer becomes ``ChannelBroken`` promptly instead of a hang.

Ending after an error (a ``with`` block or a ``serve()`` handler left by an exception): the
side sends one last message on the socket, ``{"shm": 1, "failed": "<Type> raised while the
channel was open"}`` (at most 1024 bytes of reason), then lets go of its sending ring *without*
marking it closed. The peer's ring delivers every message published before, then sees the
socket readable or hung up (no closed flag): the peer went away. Its ``on_end`` hook
(``_ending.PeerEnd``) reads the message and makes that ``ChannelBroken`` naming the reason; so
does its sending ring's, so a side blocked sending into a full ring is told the same. A peer
of an ipcwire that does not know the message never reads it: it sees a peer that went away
without closing (``ChannelBroken`` too). A clean close sends nothing and sets the closed flag,
as always (``EndOfChannel``).
"""

from __future__ import annotations

import atexit
import os
import socket
import weakref
from dataclasses import dataclass, field

from ipcwire._core.ending import exit_reason
from ipcwire.errors import FrameTooLarge
from ipcwire.shm._ending import PeerEnd, failed_frame
from ipcwire.shm._layout import MIN_CAPACITY as _MIN_RING
from ipcwire.shm._layout import RECORD_HEADER as RECORD
from ipcwire.shm._peers import inode
from ipcwire.shm._ring import RingEnd
from ipcwire.shm._segment import Segment

__all__ = ["HELD", "Link"]


@dataclass(eq=False)
class Link:
    """A connected pair of rings. ``tx`` sends to the peer, ``rx`` receives from it."""

    tx: RingEnd
    rx: RingEnd
    sock: socket.socket
    rx_bell: socket.socket  # this side's end of the data doorbell: parks on it for data
    tx_bell: socket.socket  # this side's end of the space doorbell: parks on it for space
    segment: Segment | None
    name: str = "shm"  # the URL
    who: str = ""  # the peer, in error messages: "" (the URL) on the client, "the client of <URL>"
    closed: bool = field(default=False)
    owner: int = field(default_factory=os.getpid)  # the process that set the link up

    def __post_init__(self) -> None:
        end = PeerEnd(self.sock, self.name, self.who or self.name)
        self.rx.on_end = end
        self.tx.on_end = end.sending  # a side that only sends is told the reason too
        _open.add(self)  # told at exit if an uncaught exception ends the program
        self._inodes = [inode(s.fileno()) for s in (self.rx_bell, self.tx_bell, self.sock)]
        HELD.update(self._inodes)

    @property
    def rx_fd(self) -> int:
        """The fd to wait on for data (asyncio: add_reader, then :meth:`drain`)."""
        return self.rx_bell.fileno()

    @property
    def tx_fd(self) -> int:
        """The fd to wait on for space."""
        return self.tx_bell.fileno()

    @staticmethod
    def drain(bell: socket.socket) -> bool:
        """Read the doorbell bytes waiting on ``bell`` without blocking. False: the peer's
        end is gone (end of file; it stays readable from now on)."""
        try:
            return bell.recv(64, socket.MSG_DONTWAIT) != b""
        except BlockingIOError:
            return True
        except OSError:
            return False

    def loan_too_large(self, size: int) -> FrameTooLarge:
        """The error for a loan of ``size`` bytes over the sending ring (its capacity less 16),
        with the fix this side can make: the client connects with a larger ``capacity=``; the
        server cannot (the client chose both rings), so it says what the client must ask for."""
        limit = self.tx.max_record
        need = max(_MIN_RING, 1 << (size + RECORD - 1).bit_length())
        if self.who:  # the listener's side: its ring to the client
            fix = (
                f"the connecting side chooses the ring sizes, so the client must connect with "
                f"a larger ring from the server: capacity=({_size(self.rx.capacity)!r}, "
                f"{_size(need)!r}) (to the server, from the server), or more to hold several"
            )
        else:
            fix = (
                f"connect with a larger ring to the server: capacity=({_size(need)!r}, "
                f"{_size(self.rx.capacity)!r}) (to the server, from the server), or more to hold "
                f"several"
            )
        return FrameTooLarge(
            f"{self.name}: a loan of {size} bytes is over the limit of {limit} (the ring's "
            f"capacity less 16); {fix}; or use send(), which splits long messages",
            size=size,
            limit=limit,
            endpoint=self.name,
        )

    def close(self, reason: str = "") -> None:
        """Mark both rings closed (the peer sees end of channel), wake every waiter, and let
        go of the fds and the mapping (at once, or when the last user leaves).

        ``reason`` (not empty): this side ends after an error. It says so on the liveness
        socket and lets go of its sending ring without marking it closed, so that the peer,
        after every message before, gets ``ChannelBroken`` naming the reason (or, if its
        ipcwire does not read the reason, one saying this side went away)."""
        if self.closed:
            return
        self.closed = True
        _open.discard(self)
        HELD.difference_update(getattr(self, "_inodes", ()))
        if os.getpid() != self.owner:
            # A forked child closing its copy: the rings are its parent's channel, so mark
            # nothing closed in them (the parent's peer would see the end). Close our fds;
            # the mapping goes with the ring objects.
            for s in (self.rx_bell, self.tx_bell, self.sock):
                s.close()
            return
        if reason:
            self._say_failed(reason)
            self.tx.abandon()
        else:
            self.tx.close()
        self.rx.close()
        self.rx_bell.close()
        self.tx_bell.close()
        self.sock.close()
        seg, self.segment = self.segment, None
        if seg is not None:
            try:
                seg.mm.close()
            except BufferError:
                pass  # a ring or a loaned view still maps it; it is unmapped when they go

    def _say_failed(self, reason: str) -> None:
        """The last message on the liveness socket: why this side ends. Never waits (the
        peer never reads this socket before its end, so its buffer holds nothing but this)."""
        try:
            self.sock.setblocking(False)
            self.sock.send(failed_frame(reason), socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        except OSError:
            pass  # the peer is gone already, or this cannot be said: it sees this side go

    def __del__(self) -> None:
        # dropped without close(): the peer sees a clean end, and no fd is left open
        try:
            self.close()
        except Exception:  # noqa: S110 - interpreter shutdown, half-built object
            pass


def _size(n: int) -> str:
    """A ring size as capacity= takes it: "16M", "64K", or bytes."""
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


_open: weakref.WeakSet[Link] = weakref.WeakSet()

# The inodes of the sockets the open links of this process hold (doorbell ends, liveness
# sockets): a new client's doorbell connected to one of them is refused (_setup).
HELD: set[int] = set()


def _failed_at_exit() -> None:
    """An uncaught exception ends the program with links still open: say so on each one's
    liveness socket (nothing else: a thread blocked in a receive stays blocked). The rings
    are then let go as the process ends, and the peer's end hook reads the reason, as
    unix and tcp tell it with their goodbye."""
    reason = exit_reason()
    if reason:
        for link in list(_open):
            if not link.closed and link.owner == os.getpid():
                link._say_failed(reason)


atexit.register(_failed_at_exit)

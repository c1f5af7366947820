"""A link: one connection's pair of rings, their doorbells, and the Unix socket that ties them.

Setting up (after ipcwire's handshake, on the same connected Unix stream socket)::

    client -> {"shm": 1, "capacity": [c2s, s2c], "size": N}   + fds [memfd, data, space]
    server -> {"shm": 1}
           or {"shm": 1, "error": "..."}

Each message is a 4-byte big-endian length and a JSON object (the same framing as the
handshake). The doorbells are two Unix stream socketpairs the client creates, keeping one end
of each and giving the other to the server:

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

After that the socket carries nothing. It stays open as the liveness signal: when the peer's
process ends, however it ends, the kernel closes its end, the socket hangs up, and a parked
waiter's ``poll`` wakes at once (a spinning waiter asks every millisecond). That is how a dead
peer becomes ``ChannelBroken`` promptly instead of a hang.

Ending after an error (a ``with`` block or a ``serve()`` handler left by an exception): the
side sends one last message on the socket, ``{"shm": 1, "failed": "<Type> raised while the
channel was open"}`` (at most 1024 bytes of reason), then lets go of its sending ring *without*
marking it closed. The peer's ring delivers every message published before, then sees the
socket readable or hung up (no closed flag): the peer went away. Its ``on_end`` hook
(``_ending.PeerEnd``) reads the message and makes that ``ChannelBroken`` naming the reason. A peer
of an ipcwire that does not know the message never reads it: it sees a peer that went away
without closing (``ChannelBroken`` too). A clean close sends nothing and sets the closed flag,
as always (``EndOfChannel``).

The setup steps here do no socket I/O (:class:`ClientSetup`, :func:`server_setup`,
:class:`FrameReader`); the blocking functions :func:`connect_link` and :func:`accept_link`
and the asyncio driver each do the reading and writing their own way.
"""

from __future__ import annotations

import array
import atexit
import os
import resource
import socket
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from ipcwire._core.codecs import DECODE_ERRORS
from ipcwire._core.ending import exit_reason
from ipcwire.errors import (
    ChannelBroken,
    HandshakeError,
    IpcwireError,
    RemoteProtocolError,
    ResourceExhausted,
    Timeout,
)
from ipcwire.shm import _layout as L
from ipcwire.shm._ending import PeerEnd, failed_frame
from ipcwire.shm._ring import RingEnd, make_ring
from ipcwire.shm._segment import Segment, check_doorbell, create_segment, open_segment

__all__ = [
    "DEFAULT_CAPACITY",
    "WARN_ON_DROP",
    "ClientSetup",
    "FrameReader",
    "Link",
    "accept_link",
    "connect_link",
    "encode_frame",
    "recv_frame",
    "send_frame",
    "server_setup",
]

DEFAULT_CAPACITY: Final = 1 << 20  # data bytes per direction
MAX_PEER_CAPACITY: Final = 1 << 30  # the largest ring a server maps for a client
MAX_SETUP_FRAME: Final = 64 * 1024
_encode = msgspec.json.encode
_decode = msgspec.json.decode


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
    who: str = ""  # the peer, in error messages: the URL, or "the client of <URL>"
    closed: bool = field(default=False)
    owner: int = field(default_factory=os.getpid)  # the process that set the link up

    def __post_init__(self) -> None:
        self.rx.on_end = PeerEnd(self.sock, self.name, self.who or self.name)
        _open.add(self)  # told at exit if an uncaught exception ends the program

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


_open: weakref.WeakSet[Link] = weakref.WeakSet()


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


# -- setup frames -----------------------------------------------------------------------------


# A client dropped for one of these is worth a warning (a bad peer, or this process out of
# descriptors); for the others (it went away, timed out), an info line.
WARN_ON_DROP: Final = (RemoteProtocolError, ResourceExhausted)


def encode_frame(obj: dict[str, Any]) -> bytes:
    """One setup message: 4-byte big-endian length, then JSON."""
    body = _encode(obj)
    return len(body).to_bytes(4, "big") + body


class FrameReader:
    """Collects one length-prefixed frame and the fds that came with it, never reading a
    byte past it (``want()`` says how many to ask for). Closes the fds if abandoned."""

    def __init__(self, maxfds: int) -> None:
        self.maxfds = maxfds
        self.ancillary = socket.CMSG_SPACE(max(maxfds, 1) * 4)
        self.buf = bytearray()
        self.fds: list[int] = []

    def want(self) -> int:
        """Bytes still needed (0: the frame is complete)."""
        if len(self.buf) < 4:
            return 4 - len(self.buf)
        size = int.from_bytes(self.buf[:4], "big")
        if size > MAX_SETUP_FRAME:
            raise RemoteProtocolError("the peer sent an oversized setup message")
        return 4 + size - len(self.buf)

    def feed(self, data: bytes, ancdata: list[tuple[int, int, bytes]], flags: int) -> None:
        """Add what one ``recvmsg`` returned.

        Raises:
            ChannelBroken: end of file. RemoteProtocolError: more fds than expected.
            ResourceExhausted: this process could not take the fds (out of descriptors).
        """
        for level, kind, cdata in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                got = array.array("i")
                got.frombytes(cdata[: len(cdata) - len(cdata) % got.itemsize])
                self.fds.extend(got)
        if flags & socket.MSG_CTRUNC and len(self.fds) < self.maxfds:
            # room was made for them all: the kernel could not give this process any more
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            raise ResourceExhausted(
                f"this process is out of file descriptors (all {soft} it may open are in "
                f"use), so the peer's shared memory could not be received; close unused "
                f"channels, or raise the limit (ulimit -n)"
            )
        if flags & socket.MSG_CTRUNC or len(self.fds) > self.maxfds:
            raise RemoteProtocolError("the peer sent more file descriptors than expected")
        if not data:
            raise ChannelBroken("the peer closed the connection during the setup")
        self.buf += data

    def take(self) -> tuple[bytes, list[int]]:
        """The frame's body and fds (now the caller's to close)."""
        fds, self.fds = self.fds, []
        return bytes(self.buf[4:]), fds

    def discard(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def send_frame(sock: socket.socket, obj: dict[str, Any], deadline: float, fds: list[int]) -> None:
    """Send one setup message (blocking), with ``fds`` attached (SCM_RIGHTS)."""
    data = encode_frame(obj)
    sock.settimeout(_remaining(deadline))
    sent = socket.send_fds(sock, [data], fds) if fds else sock.send(data)
    if sent < len(data):
        sock.sendall(data[sent:])


def recv_frame(sock: socket.socket, deadline: float, maxfds: int) -> tuple[bytes, list[int]]:
    """Receive one setup message (blocking) and its fds (close-on-exec; the caller's).

    Raises:
        TimeoutError, ChannelBroken (EOF), RemoteProtocolError (too long, too many fds).
    """
    reader = FrameReader(maxfds)
    try:
        while want := reader.want():
            sock.settimeout(_remaining(deadline))
            data, anc, flags, _ = sock.recvmsg(want, reader.ancillary, socket.MSG_CMSG_CLOEXEC)
            reader.feed(data, anc, flags)
        return reader.take()
    finally:
        reader.discard()


def _parse(body: bytes, who: str) -> dict[str, Any]:
    try:
        msg = _decode(body)
    except DECODE_ERRORS:
        msg = None
    if not isinstance(msg, dict) or msg.get("shm") != 1:
        raise RemoteProtocolError(f"{who} sent something that is not an ipcwire shm setup")
    return msg


def _bell(fd: int) -> socket.socket:
    s = socket.socket(fileno=fd)
    s.setblocking(True)  # (a default timeout set with socket.setdefaulttimeout would not be)
    return s


def _doorbell() -> tuple[int, int]:
    """A doorbell: (this side's end, the peer's end) of a Unix stream socketpair, close-on-exec
    and blocking (the C ring parks in a blocking ``recv``; Python code reads it with
    ``MSG_DONTWAIT``, never by making it non-blocking: the mode is shared by every copy)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.setblocking(True)  # (a default timeout set with socket.setdefaulttimeout would not be)
    b.setblocking(True)
    return a.detach(), b.detach()


def _attach(
    seg: Segment,
    capacity: tuple[int, int],
    order: tuple[int, int],
    bells: list[int],
    sock: socket.socket,
    name: str,
    impl: str | None,
    ring_kw: dict[str, Any],
) -> list[RingEnd]:
    """This side's [producer, consumer] ends: it writes ring ``order[0]``, reads ``order[1]``.
    ``bells``: this side's ends of the [data, space] doorbells. The producer parks on
    ``space`` and rings ``data``; the consumer parks on ``data`` and rings ``space``."""
    data, space = bells
    rings: list[RingEnd] = []
    try:
        for role, i, wait, wake in (
            ("producer", order[0], space, data),
            ("consumer", order[1], data, space),
        ):
            rings.append(
                make_ring(
                    seg.mm,
                    role,
                    offset=seg.offsets[i],
                    size=L.ring_span(capacity[i]),
                    wait_fd=wait,
                    wake_fd=wake,
                    alive_fd=sock.fileno(),
                    name=name,
                    impl=impl,
                    **ring_kw,
                )
            )
    except BaseException:
        for ring in rings:
            ring.close()
        raise
    return rings


def _undo(rings: list[RingEnd], fds: list[int], seg: Segment | None) -> None:
    for ring in rings:
        ring.close()
    for fd in fds:
        os.close(fd)
    if seg is not None:
        try:
            seg.mm.close()
        except BufferError:
            pass


# -- the two sides, without I/O ---------------------------------------------------------------


class ClientSetup:
    """The connecting side: ``hello()`` to send, then ``finish()`` with the server's answer.

    ``capacity``: data bytes of (client to server, server to client). ``ring_kw``: policy,
    spin_ns, max_message for the rings. Call ``abort()`` if it is not finished.
    """

    def __init__(
        self,
        capacity: tuple[int, int],
        *,
        name: str,
        impl: str | None = None,
        **ring_kw: Any,
    ) -> None:
        for cap in capacity:
            if not L.MIN_CAPACITY <= cap <= L.MAX_CAPACITY or cap & (cap - 1):
                raise ValueError(f"capacity={cap}: must be a power of two from 4 KiB to 4 GiB")
        self.capacity = capacity
        self.name = name
        self.impl = impl
        self.ring_kw = ring_kw
        seg_fd, self.segment = create_segment(capacity, impl=impl)
        self._seg_fd: int | None = seg_fd
        self.mine: list[int] = []  # [data, space]: this side's ends
        self._theirs: list[int] = []  # the ends handed to the server
        self._done = False
        try:
            for _ in range(2):
                mine, theirs = _doorbell()
                self.mine.append(mine)
                self._theirs.append(theirs)
        except BaseException:
            self.abort()
            raise

    def hello(self) -> tuple[bytes, list[int]]:
        """The first message and the fds to attach to it."""
        assert self._seg_fd is not None
        msg = {"shm": 1, "capacity": list(self.capacity), "size": self.segment.size}
        return encode_frame(msg), [self._seg_fd, *self._theirs]

    def sent(self) -> None:
        """The hello went out: the memfd and the doorbell ends are the peer's now (our mapping
        keeps the memory)."""
        if self._seg_fd is not None:
            os.close(self._seg_fd)
            self._seg_fd = None
        for fd in self._theirs:
            os.close(fd)
        self._theirs = []

    def finish(self, body: bytes, fds: list[int], sock: socket.socket) -> Link:
        """Attach the rings, given the server's answer (its fds are closed here).

        Raises:
            HandshakeError (refused), RemoteProtocolError (not an answer we accept).
        """
        rings: list[RingEnd] = []
        try:
            reply = _parse(body, self.name)
            if "error" in reply and reply.get("exhausted") is True:
                raise ResourceExhausted(
                    f"{self.name} could not take the connection: {reply['error']}",
                    endpoint=self.name,
                )
            if "error" in reply:
                raise HandshakeError(
                    f"{self.name} refused the shared memory: {reply['error']}", endpoint=self.name
                )
            if fds:
                raise RemoteProtocolError(f"{self.name} sent {len(fds)} fds instead of none")
            rings = _attach(
                self.segment,
                self.capacity,
                (0, 1),
                self.mine,
                sock,
                self.name,
                self.impl,
                self.ring_kw,
            )
        except BaseException:
            for ring in rings:
                ring.close()
            raise
        finally:
            for fd in fds:
                os.close(fd)
        self._done = True
        mine, self.mine = self.mine, []
        return Link(
            rings[0], rings[1], sock, _bell(mine[0]), _bell(mine[1]), self.segment, self.name
        )

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self.sent()
            _undo([], self.mine, self.segment)
            self.mine = []


def server_setup(
    body: bytes,
    fds: list[int],
    sock: socket.socket,
    *,
    name: str,
    impl: str | None = None,
    max_capacity: int = MAX_PEER_CAPACITY,
    **ring_kw: Any,
) -> tuple[Link, bytes]:
    """The server side, given the client's hello: check everything, attach the rings.

    Returns the link and the answer to send. The received fds are the link's now, or closed
    here.

    Raises:
        RemoteProtocolError: the client's hello or memory is refused; answer with
            :func:`refusal` so it learns why.
    """
    rings: list[RingEnd] = []
    seg: Segment | None = None
    who = f"the client of {name}"
    try:
        hello = _parse(body, who)
        caps = hello.get("capacity")
        if (
            not isinstance(caps, list)
            or len(caps) != 2
            or not all(type(c) is int and L.MIN_CAPACITY <= c <= max_capacity for c in caps)
            or any(c & (c - 1) for c in caps)
        ):
            raise RemoteProtocolError(
                f"{who} asked for ring capacities {caps!r}: each must be a power of two from "
                f"4 KiB to {max_capacity}"
            )
        if len(fds) != 3:
            raise RemoteProtocolError(f"{who} sent {len(fds)} fds instead of 3")
        capacity = (caps[0], caps[1])
        seg = open_segment(fds[0], capacity, who)
        for fd in fds[1:]:
            check_doorbell(fd, who)
        rings = _attach(seg, capacity, (1, 0), fds[1:], sock, name, impl, ring_kw)
    except BaseException:
        _undo(rings, fds, seg)
        raise
    os.close(fds[0])  # the mapping keeps the memory
    link = Link(rings[0], rings[1], sock, _bell(fds[1]), _bell(fds[2]), seg, name, who)
    return link, encode_frame({"shm": 1})


def refusal(exc: BaseException) -> bytes:
    """The answer telling the client why its setup was refused (``"exhausted"``: the listener
    is out of something, so the client may try again later)."""
    answer: dict[str, Any] = {"shm": 1, "error": str(exc)}
    if isinstance(exc, ResourceExhausted):
        answer["exhausted"] = True
    return encode_frame(answer)


# -- blocking I/O -----------------------------------------------------------------------------


def connect_link(
    sock: socket.socket,
    *,
    deadline: float,
    capacity: tuple[int, int] = (DEFAULT_CAPACITY, DEFAULT_CAPACITY),
    name: str = "shm",
    impl: str | None = None,
    **ring_kw: Any,
) -> Link:
    """The client side, blocking: create the segment and doorbells, send them, attach.

    Raises:
        Timeout, ChannelBroken, HandshakeError, RemoteProtocolError, ResourceExhausted.
    """
    setup = ClientSetup(capacity, name=name, impl=impl, **ring_kw)
    try:
        data, fds = setup.hello()
        sock.settimeout(_remaining(deadline))
        sent = socket.send_fds(sock, [data], fds)
        setup.sent()
        if sent < len(data):
            sock.sendall(data[sent:])
        body, peer_fds = recv_frame(sock, deadline, 0)
        return setup.finish(body, peer_fds, sock)
    except BaseException as exc:
        setup.abort()
        _reraise(exc, name)
        raise


def accept_link(
    sock: socket.socket,
    *,
    deadline: float,
    name: str = "shm",
    impl: str | None = None,
    max_capacity: int = MAX_PEER_CAPACITY,
    **ring_kw: Any,
) -> Link:
    """The server side, blocking: receive the segment and doorbells, check, attach, answer.

    Raises:
        Timeout, ChannelBroken, RemoteProtocolError (refused; the client has been told why).
    """
    try:
        try:
            body, fds = recv_frame(sock, deadline, 3)
            link, answer = server_setup(
                body, fds, sock, name=name, impl=impl, max_capacity=max_capacity, **ring_kw
            )
        except IpcwireError as exc:  # (after an end of file, the answer goes nowhere)
            try:
                sock.settimeout(0.5)
                sock.sendall(refusal(exc))
            except OSError:
                pass
            raise
        try:
            sock.settimeout(_remaining(deadline))
            sock.sendall(answer)
        except BaseException:
            link.close()
            raise
        return link
    except BaseException as exc:
        _reraise(exc, name)
        raise


def _reraise(exc: BaseException, name: str) -> None:
    """Turn a plain TimeoutError or OSError into ipcwire's errors (else return)."""
    if isinstance(exc, IpcwireError):
        return
    if isinstance(exc, TimeoutError):
        raise Timeout(
            f"{name}: the shared-memory setup did not finish in time", endpoint=name
        ) from exc
    if isinstance(exc, OSError):
        raise ChannelBroken(
            f"{name}: the shared-memory setup failed: {exc}", endpoint=name
        ) from exc

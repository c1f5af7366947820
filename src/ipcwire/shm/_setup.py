"""Setting up a link: the shared-memory setup, after ipcwire's handshake, on the same socket.

::

    client -> {"shm": 1, "capacity": [c2s, s2c], "size": N}   + fds [memfd, data, space]
    server -> {"shm": 1}
           or {"shm": 1, "error": "..."}

Each message is one frame of ``_frames`` (a 4-byte big-endian length and a JSON object, the
same framing as the handshake). The client creates the segment and the two doorbells, keeps
one end of each doorbell and gives the other to the server, which checks all of it before it
maps anything; how a :class:`~ipcwire.shm._link.Link` then uses them is ``_link``'s.

The setup steps here do no socket I/O (:class:`ClientSetup`, :func:`server_setup`,
:func:`refusal`); the blocking functions :func:`connect_link` and :func:`accept_link` and the
asyncio driver each do the reading and writing their own way. Apart from ``_link``: this is
how a link is made, once per connection; ``_link`` is the link in use.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Any, Final

import msgspec

from ipcwire._core.codecs import DECODE_ERRORS
from ipcwire.errors import (
    ChannelBroken,
    HandshakeError,
    IpcwireError,
    RemoteProtocolError,
    ResourceExhausted,
    Timeout,
)
from ipcwire.shm import _layout as L
from ipcwire.shm._frames import encode_frame, recv_frame, remaining
from ipcwire.shm._link import HELD, Link
from ipcwire.shm._naming import DEFAULT_CAPACITY
from ipcwire.shm._peers import inode, peer_inode
from ipcwire.shm._ring import RingEnd, make_ring
from ipcwire.shm._segment import Segment, check_doorbell, create_segment, open_segment

__all__ = [
    "MAX_PENDING",
    "WARN_ON_DROP",
    "ClientSetup",
    "accept_link",
    "connect_link",
    "refusal",
    "server_setup",
]

MAX_PEER_CAPACITY: Final = 1 << 30  # the largest ring a server maps for a client
MAX_PENDING: Final = 64  # connections in their setup at once; more wait in the backlog
_decode = msgspec.json.decode


# A client dropped for one of these is worth a warning (a bad peer, or this process out of
# descriptors); for the others (it went away, timed out), an info line.
WARN_ON_DROP: Final = (RemoteProtocolError, ResourceExhausted)


def _parse(body: bytes, who: str) -> dict[str, Any]:
    try:
        msg = _decode(body)
    except DECODE_ERRORS:
        msg = None
    if not isinstance(msg, dict) or msg.get("shm") != 1:
        raise RemoteProtocolError(f"{who} sent something that is not an ipcwire shm setup")
    return msg


# How long an untimed park sleeps in its one blocking ``recv`` before it also watches the
# liveness socket (SO_RCVTIMEO on this side's doorbell ends; see _bell).
PARK_RECHECK_US: Final = 10_000


def _bell(fd: int) -> socket.socket:
    """This side's end of a doorbell, as the link keeps it.

    An untimed park sleeps in one blocking ``recv`` on it, which ends when the peer rings or
    the peer's end closes. The end may be held by more than the peer, though: a hostile
    client can hand the server both ends of one socketpair, or ends whose other end it gave
    to the server in another connection; that end then never closes, and the ``recv`` never
    learns that the client died. So the ``recv`` gives up after ``PARK_RECHECK_US``
    (SO_RCVTIMEO, set once here, nothing per message): the ring then waits in ``poll`` on
    the doorbell *and* the liveness socket, as a timed wait does, until something happens.
    A busy channel never parks that long; an idle one pays one extra wake-up per long wait.
    """
    s = socket.socket(fileno=fd)
    s.setblocking(True)  # (a default timeout set with socket.setdefaulttimeout would not be)
    s.setsockopt(
        socket.SOL_SOCKET,
        socket.SO_RCVTIMEO,
        struct.pack("@ll", PARK_RECHECK_US // 1_000_000, PARK_RECHECK_US % 1_000_000),
    )
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
        ResourceExhausted: no memory or address space here to map its rings (the same).
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
        _check_bells_are_theirs(fds[1:], sock, who)
        rings = _attach(seg, capacity, (1, 0), fds[1:], sock, name, impl, ring_kw)
    except BaseException:
        _undo(rings, fds, seg)
        raise
    os.close(fds[0])  # the mapping keeps the memory
    link = Link(rings[0], rings[1], sock, _bell(fds[1]), _bell(fds[2]), seg, name, who)
    return link, encode_frame({"shm": 1})


def _check_bells_are_theirs(bells: list[int], sock: socket.socket, who: str) -> None:
    """Refuse doorbells whose other end this process holds: the other doorbell of the same
    setup, the connection's own socket, or a socket of another open link (as a client handing
    over both ends of one socketpair, in one setup or across two, would have it). The client's
    death would never close such a doorbell, and only refusing it is sure: a timeout set on
    this end can be undone by a client that kept a copy of it. (Where the kernel does not say
    which socket a doorbell is connected to, ``_bell``'s timeout is what remains.)

    Raises:
        RemoteProtocolError: such a doorbell.
    """
    mine = {inode(fd) for fd in bells} | {inode(sock.fileno())} | HELD
    for fd in bells:
        if peer_inode(fd) in mine:
            raise RemoteProtocolError(
                f"{who} sent a doorbell whose other end this server holds itself (both ends "
                f"of one socketpair, or one given to it before); a doorbell must be one end of "
                f"a socketpair whose other end the client keeps, so it was refused"
            )


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
        sock.settimeout(remaining(deadline))
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
            sock.settimeout(remaining(deadline))
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

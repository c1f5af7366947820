"""A link: one connection's pair of rings, their eventfds, and the Unix socket that ties them.

Setting up (after ipcwire's handshake, on the same connected Unix stream socket)::

    client -> {"shm": 1, "capacity": [c2s, s2c], "size": N}   + fds [memfd, rx_efd, tx_efd]
    server -> {"shm": 1}                                      + fds [rx_efd, tx_efd]
           or {"shm": 1, "error": "..."}

Each message is a 4-byte big-endian length and a JSON object (the same framing as the
handshake). Each side creates the two eventfds it parks on (``rx``: data arrived in the ring it
reads; ``tx``: space freed in the ring it writes) and gives them to the peer, which writes to
them only when the waiting flag in the ring header says someone is parked.

After that the socket carries nothing. It stays open as the liveness signal: when the peer's
process ends, however it ends, the kernel closes its end, the socket hangs up, and a parked
waiter's ``poll`` wakes at once (a spinning waiter asks every millisecond). That is how a dead
peer becomes ``ChannelBroken`` promptly instead of a hang.
"""

from __future__ import annotations

import array
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from ipcwire.errors import (
    ChannelBroken,
    HandshakeError,
    IpcwireError,
    RemoteProtocolError,
    Timeout,
)
from ipcwire.shm import _layout as L
from ipcwire.shm._ring import RingEnd, make_ring
from ipcwire.shm._segment import Segment, check_eventfd, create_segment, open_segment

__all__ = [
    "DEFAULT_CAPACITY",
    "Link",
    "accept_link",
    "connect_link",
    "recv_frame",
    "send_frame",
]

DEFAULT_CAPACITY: Final = 1 << 20  # data bytes per direction
MAX_PEER_CAPACITY: Final = 1 << 30  # the largest ring a server maps for a client
_MAX_FRAME: Final = 64 * 1024
_encode = msgspec.json.encode
_decode = msgspec.json.decode


@dataclass(eq=False)
class Link:
    """A connected pair of rings. ``tx`` sends to the peer, ``rx`` receives from it."""

    tx: RingEnd
    rx: RingEnd
    sock: socket.socket
    rx_fd: int  # eventfd this side parks on for data (asyncio: add_reader)
    tx_fd: int  # eventfd this side parks on for space
    segment: Segment | None
    closed: bool = field(default=False)

    def close(self) -> None:
        """Mark both rings closed (the peer sees end of channel), wake every waiter, and let
        go of the fds and the mapping (at once, or when the last user leaves)."""
        if self.closed:
            return
        self.closed = True
        self.tx.close()
        self.rx.close()
        for fd in (self.rx_fd, self.tx_fd):
            os.close(fd)
        self.sock.close()
        seg, self.segment = self.segment, None
        if seg is not None:
            try:
                seg.mm.close()
            except BufferError:
                pass  # a ring or a loaned view still maps it; it is unmapped when they go


# -- framing of the setup messages --------------------------------------------------------


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def send_frame(sock: socket.socket, obj: dict[str, Any], deadline: float, fds: list[int]) -> None:
    """Send one length-prefixed JSON object, with ``fds`` attached (SCM_RIGHTS)."""
    body = _encode(obj)
    data = len(body).to_bytes(4, "big") + body
    sock.settimeout(_remaining(deadline))
    sent = socket.send_fds(sock, [data], fds) if fds else sock.send(data)
    if sent < len(data):
        sock.sendall(data[sent:])


def recv_frame(sock: socket.socket, deadline: float, maxfds: int) -> tuple[bytes, list[int]]:
    """Receive one length-prefixed frame (exactly: never a byte more), and the fds that came
    with it (close-on-exec). The caller owns the fds, even when this raises... it closes them.

    Raises:
        TimeoutError, ChannelBroken (EOF), RemoteProtocolError (too long, too many fds).
    """
    buf = bytearray()
    fds: list[int] = []
    ancillary = socket.CMSG_SPACE(max(maxfds, 1) * 4)
    try:
        while True:
            want = 4 if len(buf) < 4 else 4 + int.from_bytes(buf[:4], "big")
            if want > 4 + _MAX_FRAME:
                raise RemoteProtocolError("the peer sent an oversized setup message")
            if len(buf) == want and want > 4:
                return bytes(buf[4:]), fds
            sock.settimeout(_remaining(deadline))
            data, anc, flags, _ = sock.recvmsg(want - len(buf), ancillary, socket.MSG_CMSG_CLOEXEC)
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    got = array.array("i")
                    got.frombytes(cdata[: len(cdata) - len(cdata) % got.itemsize])
                    fds.extend(got)
            if flags & socket.MSG_CTRUNC or len(fds) > maxfds:
                raise RemoteProtocolError("the peer sent more file descriptors than expected")
            if not data:
                raise ChannelBroken("the peer closed the connection during the setup")
            buf += data
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _parse(body: bytes, who: str) -> dict[str, Any]:
    try:
        msg = _decode(body)
    except msgspec.DecodeError:
        msg = None
    if not isinstance(msg, dict) or msg.get("shm") != 1:
        raise RemoteProtocolError(f"{who} sent something that is not an ipcwire shm setup")
    return msg


def _eventfd() -> int:
    return os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)


def _check_capacity(cap: int, what: str) -> None:
    if not L.MIN_CAPACITY <= cap <= L.MAX_CAPACITY or cap & (cap - 1):
        raise ValueError(f"{what}={cap}: must be a power of two from 4 KiB to 4 GiB")


# -- the two sides --------------------------------------------------------------------------


def connect_link(
    sock: socket.socket,
    *,
    deadline: float,
    capacity: tuple[int, int] = (DEFAULT_CAPACITY, DEFAULT_CAPACITY),
    name: str = "shm",
    impl: str | None = None,
    **ring_kw: Any,
) -> Link:
    """The client side: create the segment and eventfds, send them, attach.

    ``capacity``: data bytes of (client to server, server to client). ``ring_kw``: policy,
    spin_ns, max_message for the rings.

    Raises:
        Timeout, ChannelBroken, HandshakeError, RemoteProtocolError, ResourceExhausted.
    """
    for cap in capacity:
        _check_capacity(cap, "capacity")
    seg_fd, seg = create_segment(capacity, impl=impl)
    mine = [_eventfd(), _eventfd()]  # [rx, tx]
    peer_fds: list[int] = []
    rings: list[RingEnd] = []
    try:
        try:
            hello = {"shm": 1, "capacity": list(capacity), "size": seg.size}
            send_frame(sock, hello, deadline, [seg_fd, *mine])
        finally:
            os.close(seg_fd)
        body, peer_fds = recv_frame(sock, deadline, 2)
        reply = _parse(body, name)
        if "error" in reply:
            raise HandshakeError(f"{name} refused the shared memory: {reply['error']}")
        if len(peer_fds) != 2:
            raise RemoteProtocolError(f"{name} sent {len(peer_fds)} fds instead of 2")
        for fd in peer_fds:
            check_eventfd(fd, name)
        common = {"alive_fd": sock.fileno(), "name": name, "impl": impl, **ring_kw}
        # the server parks on peer_fds[0] for data in ring 0, on peer_fds[1] for space in ring 1
        rings.append(
            make_ring(
                seg.mm,
                "producer",
                offset=seg.offsets[0],
                size=L.ring_span(capacity[0]),
                wait_fd=mine[1],
                wake_fd=peer_fds[0],
                **common,
            )
        )
        rings.append(
            make_ring(
                seg.mm,
                "consumer",
                offset=seg.offsets[1],
                size=L.ring_span(capacity[1]),
                wait_fd=mine[0],
                wake_fd=peer_fds[1],
                **common,
            )
        )
    except BaseException as exc:
        _undo(rings, mine, seg)
        _reraise(exc, name)
        raise
    finally:
        for fd in peer_fds:
            os.close(fd)
    return Link(tx=rings[0], rx=rings[1], sock=sock, rx_fd=mine[0], tx_fd=mine[1], segment=seg)


def accept_link(
    sock: socket.socket,
    *,
    deadline: float,
    name: str = "shm",
    impl: str | None = None,
    max_capacity: int = MAX_PEER_CAPACITY,
    **ring_kw: Any,
) -> Link:
    """The server side: receive the segment and eventfds, check them, attach, answer.

    Raises:
        Timeout, ChannelBroken, RemoteProtocolError (what the client sent is refused; it has
        been told why).
    """
    body, fds = recv_frame(sock, deadline, 3)
    mine: list[int] = []
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
            check_eventfd(fd, who)
        mine = [_eventfd(), _eventfd()]  # [rx, tx]
        common = {"alive_fd": sock.fileno(), "name": name, "impl": impl, **ring_kw}
        # the client parks on fds[1] for data in ring 1, on fds[2] for space in ring 0
        rings.append(
            make_ring(
                seg.mm,
                "producer",
                offset=seg.offsets[1],
                size=L.ring_span(capacity[1]),
                wait_fd=mine[1],
                wake_fd=fds[1],
                **common,
            )
        )
        rings.append(
            make_ring(
                seg.mm,
                "consumer",
                offset=seg.offsets[0],
                size=L.ring_span(capacity[0]),
                wait_fd=mine[0],
                wake_fd=fds[2],
                **common,
            )
        )
        send_frame(sock, {"shm": 1}, deadline, mine)
    except BaseException as exc:
        if isinstance(exc, IpcwireError):
            try:
                send_frame(sock, {"shm": 1, "error": str(exc)}, time.monotonic() + 0.5, [])
            except (OSError, ValueError):
                pass
        _undo(rings, mine, seg)
        _reraise(exc, name)
        raise
    finally:
        for fd in fds:
            os.close(fd)
    return Link(tx=rings[0], rx=rings[1], sock=sock, rx_fd=mine[0], tx_fd=mine[1], segment=seg)


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

"""The frames on a shm connection's Unix socket before the rings take over.

ipcwire's handshake and then the shared-memory setup (``_setup``) travel as frames: a 4-byte
big-endian length and a body (the setup's body is a JSON object), with file descriptors
attached (SCM_RIGHTS) where the setup hands them over. :class:`FrameReader` collects one frame
and its fds without I/O; :func:`send_frame` and :func:`recv_frame` are the blocking I/O, and
``_aiosock`` is asyncio's. Apart from ``_setup`` because both drivers read the handshake with
these too, before there is any setup.
"""

from __future__ import annotations

import array
import os
import resource
import socket
import time
from typing import Any, Final

import msgspec

from ipcwire.errors import ChannelBroken, RemoteProtocolError, ResourceExhausted

__all__ = [
    "MAX_SETUP_FRAME",
    "FrameReader",
    "encode_frame",
    "recv_frame",
    "remaining",
    "send_frame",
]

MAX_SETUP_FRAME: Final = 64 * 1024
_encode = msgspec.json.encode


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


def remaining(deadline: float) -> float:
    """Seconds left until ``deadline`` (monotonic) for a socket timeout; TimeoutError once it
    passed (the setup's callers turn it into ``Timeout``)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def send_frame(sock: socket.socket, obj: dict[str, Any], deadline: float, fds: list[int]) -> None:
    """Send one setup message (blocking), with ``fds`` attached (SCM_RIGHTS)."""
    data = encode_frame(obj)
    sock.settimeout(remaining(deadline))
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
            sock.settimeout(remaining(deadline))
            data, anc, flags, _ = sock.recvmsg(want, reader.ancillary, socket.MSG_CMSG_CLOEXEC)
            reader.feed(data, anc, flags)
        return reader.take()
    finally:
        reader.discard()

"""The mq channel protocol, without I/O.

A channel is a pair of queues created by the client: ``up`` (client to server) and ``dn``
(server to client). The client announces them on the listener's rendezvous queue with one
JSON message::

    {"ipcwire_mq": 1, "pid": <client pid>, "up": "/app.<pid>.<rand>.up",
     "dn": "/app.<pid>.<rand>.dn", "hello": <the ipcwire handshake hello object>}

The server opens both, unlinks their names, and runs the ordinary ipcwire handshake
(``_core/handshake.py``): each handshake message is one JSON object in one queue message, at the
highest kernel priority so it is read before any data; the server adds ``"pid"`` to its
welcome. Kernel priorities after that::

    PRIORITY_MAX         handshake messages
    1 .. PRIORITY_MAX-1  data; user priority p travels as p + 1
    0                    end of channel (an empty message): sorts after all data

so the end-of-channel marker is always read after every message sent before it. A message
of ``msgsize`` bytes or more travels in pieces (see :class:`Reassembler`).

The marker is empty after a clean close. **After a failure** (a ``with`` block or
``serve()`` handler left by an exception) it holds the reason, UTF-8, naming the
exception's type (at most 1024 bytes, and no more than the queue's ``msgsize``), and the
end pipe's record says the same (``_ends.py``): the receiver raises ``ChannelBroken``
instead of ``EndOfChannel``. Only between ends that both offer it: the client adds
``"fails": true`` to its announcement, and a listener that knows it answers with
``"fails": true`` in its replies; with a peer that does not (an earlier version, which
takes any marker for a clean end), a failed end closes as a clean one does, byte for byte.

Besides the queues, the client makes the channel's *end pipe* (a FIFO named after the pair,
``_ends.py``), through which a close reaches the peer even when its queue is full; the server
adds ``"ends": true`` to its replies when it opened it, and both unlink its name with the
queues'.

**Across pid namespaces** (a client in ``unshare --pid``, bubblewrap, a container sharing
the IPC namespace and /dev/shm): a pid is only meaningful in its own namespace. Each side
sends its pid namespace (``"pidns": "pid:[inode]"``, from ``/proc/self/ns/pid``): the client
in its announcement, the listener in its replies. Where they differ, the peer's pid is not
used (``peer.pid`` is None; a pidfd on it would be another process's, or none), and the
listener makes the channel's *life pipe* instead (``ipcwire-mq.<pair>.life``, next to the end
pipe), opens its read end and replies ``"life": true``; the client opens the write end and
removes the name. Each end then learns of the other's exit as the pipe's other end closes
(POLLHUP on the listener's read end, POLLERR on the client's write end), as it would from a
pidfd. A peer that sends no ``"pidns"`` (an earlier version) is taken to share the
namespace, as before.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from ipcwire._core.codecs import DECODE_ERRORS
from ipcwire.errors import ConfigurationError, FrameTooLarge, RemoteProtocolError

__all__ = [
    "EOF_PRIORITY",
    "HANDSHAKE_PRIORITY",
    "USER_PRIORITY_MAX",
    "Hello",
    "Reassembler",
    "decode_json",
    "encode_json",
    "kernel_priority",
    "pair_names",
    "pieces",
    "strip_frame",
]

Buffer = bytes | bytearray | memoryview

VERSION: Final = 1
RENDEZVOUS_MSGSIZE: Final = 2048
EOF_PRIORITY: Final = 0


def _priority_max() -> int:
    import posix_ipc

    return int(posix_ipc.QUEUE_PRIORITY_MAX)


HANDSHAKE_PRIORITY: Final = _priority_max()
USER_PRIORITY_MAX: Final = HANDSHAKE_PRIORITY - 2


def kernel_priority(priority: int) -> int:
    """The kernel priority a user priority travels at.

    Raises:
        ConfigurationError: outside 0..USER_PRIORITY_MAX.
    """
    if type(priority) is not int or not 0 <= priority <= USER_PRIORITY_MAX:
        raise ConfigurationError(f"priority must be an int from 0 to {USER_PRIORITY_MAX}")
    return priority + 1


def pair_names(base: str) -> tuple[str, str]:
    """Fresh names for a channel's two queues, derived from the listener's queue name.

    The pid in the name lets ``ipcwire doctor`` find the queues of a crashed client; 64
    random bits after it, so that no other process can guess the names (and make the
    queues or the end pipe first). Short enough for the channel's end pipe too
    (``ipcwire-mq.<tag>.end``, a file name).
    """
    tag = f"{base}.{os.getpid()}.{secrets.token_hex(8)}"
    if len(tag.encode()) > 240:
        tag = f"/ipcwire.{os.getpid()}.{secrets.token_hex(8)}"
    return tag + ".up", tag + ".dn"


def encode_json(obj: dict[str, Any]) -> bytes:
    """One protocol message."""
    return msgspec.json.encode(obj)


def decode_json(data: bytes | memoryview, who: str, url: str) -> dict[str, Any]:
    """Parse one protocol message.

    Raises:
        RemoteProtocolError: not a JSON object.
    """
    try:
        obj = msgspec.json.decode(data)
    except DECODE_ERRORS:
        obj = None
    if not isinstance(obj, dict):
        raise RemoteProtocolError(
            f"{who} at {url} sent something that is not ipcwire's mq protocol", endpoint=url
        )
    return obj


def strip_frame(framed: bytes) -> bytes:
    """A handshake message without its 4-byte length prefix (queues keep boundaries)."""
    return framed[4:]


@dataclass(frozen=True, slots=True)
class Hello:
    """The client's announcement on the rendezvous queue."""

    pid: int
    up: str
    dn: str
    hello: bytes  # the handshake hello, JSON
    fails: bool = False  # the client tells (and takes) a failed end (see the docstring)
    pidns: str | None = None  # the client's pid namespace, "pid:[inode]" (see the docstring)

    def encode(self) -> bytes:
        msg: dict[str, Any] = {
            "ipcwire_mq": VERSION,
            "pid": self.pid,
            "up": self.up,
            "dn": self.dn,
            "hello": msgspec.Raw(self.hello),
        }
        if self.fails:
            msg["fails"] = True
        if self.pidns is not None:
            msg["pidns"] = self.pidns
        return encode_json(msg)

    @classmethod
    def decode(cls, data: bytes, url: str) -> Hello:
        """Raises:
        RemoteProtocolError: not an ipcwire mq hello.
        """
        msg = decode_json(data, "a client", url)
        pid, up, dn, hello = msg.get("pid"), msg.get("up"), msg.get("dn"), msg.get("hello")
        if (
            msg.get("ipcwire_mq") != VERSION
            or type(pid) is not int
            or not 0 < pid < 1 << 31  # a pid_t (pidfd_open overflows on more)
            or not isinstance(up, str)
            or not isinstance(dn, str)
            or not isinstance(hello, dict)
        ):
            raise RemoteProtocolError(
                f"a client of {url} sent an announcement this version does not understand "
                f"(ipcwire_mq={msg.get('ipcwire_mq')!r})",
                endpoint=url,
            )
        fails = msg.get("fails") is True
        pidns = msg.get("pidns")
        return cls(
            pid=pid,
            up=up,
            dn=dn,
            hello=encode_json(hello),
            fails=fails,
            pidns=pidns if isinstance(pidns, str) else None,
        )


class Reassembler:
    """Joins the pieces of messages larger than a queue's msgsize (sans-IO).

    A sender splits a message of ``size >= msgsize`` bytes into pieces of exactly ``msgsize``
    bytes followed by one shorter piece (empty when ``size`` is a multiple of ``msgsize``); a
    message shorter than ``msgsize`` is one piece, so small messages cost nothing extra. Pieces
    of one message share its priority and one writer sends them back to back, so joining per
    priority is exact even when higher priorities overtake.

    So one sender has few messages under way at once: each one it finished sending but whose
    pieces are not all here yet has a piece still waiting (in the queue, or read ahead), and
    it sends one more. ``max_partial`` (the channel gives 2 x maxmsg + 1) bounds them: a peer
    that starts more (a message at each of the 32767 priorities, never finished, would be
    held here piece by piece) is refused with RemoteProtocolError, the pieces held are let
    go, and every later piece is refused too (the channel is out of step).
    """

    __slots__ = (
        "_broken",
        "_parts",
        "_size",
        "_skip",
        "max_frame",
        "max_partial",
        "msgsize",
        "url",
    )

    def __init__(
        self, msgsize: int, max_frame: int, url: str, *, max_partial: int | None = None
    ) -> None:
        self.msgsize = msgsize
        self.max_frame = max_frame
        self.url = url
        self.max_partial = max_partial
        self._parts: dict[int, list[bytes]] = {}
        self._size: dict[int, int] = {}
        self._skip: set[int] = set()  # priorities whose current message is over max_frame
        self._broken: RemoteProtocolError | None = None

    @property
    def broken(self) -> RemoteProtocolError | None:
        """The error every later piece gets, once the peer had too many messages under way."""
        return self._broken

    @property
    def partial(self) -> bool:
        """True while a message is half received."""
        return bool(self._parts) or bool(self._skip)

    @property
    def buffered(self) -> int:
        """Bytes of messages not yet complete."""
        return sum(self._size.values())

    def feed(self, piece: bytes, priority: int) -> bytes | None:
        """One piece in; the whole message when this piece completes it.

        Raises:
            FrameTooLarge: the message grew over ``max_frame``; the rest of it is discarded
                as it arrives and the next message is delivered normally.
        """
        if self._broken is not None:
            raise self._broken
        last = len(piece) < self.msgsize
        if priority in self._skip:
            if last:
                self._skip.discard(priority)
            return None
        parts = self._parts.get(priority)
        if parts is None:
            if last:
                if len(piece) > self.max_frame:
                    raise self._too_large(len(piece))
                return piece
            if self.max_partial is not None and len(self._parts) >= self.max_partial:
                raise self._too_many()
            parts = self._parts[priority] = []
            self._size[priority] = 0
        parts.append(piece)
        size = self._size[priority] = self._size[priority] + len(piece)
        if size > self.max_frame:
            del self._parts[priority], self._size[priority]
            if not last:
                self._skip.add(priority)
            raise self._too_large(size)
        if not last:
            return None
        del self._parts[priority], self._size[priority]
        return b"".join(parts)

    def _too_many(self) -> RemoteProtocolError:
        self._broken = RemoteProtocolError(
            f"{self.url} has more than {self.max_partial} messages in pieces under way at "
            f"once, more than one ipcwire sender can have (is something else writing into "
            f"the channel's queue?); the pieces were dropped and the channel is out of step: "
            f"open a new channel",
            endpoint=self.url,
        )
        self._parts.clear()
        self._size.clear()
        self._skip.clear()
        return self._broken

    def _too_large(self, size: int) -> FrameTooLarge:
        return FrameTooLarge(
            f"a message from {self.url} is over max_frame={self.max_frame} ({size} bytes "
            f"so far); it is skipped, not delivered",
            size=size,
            limit=self.max_frame,
            endpoint=self.url,
        )


def pieces(data: Buffer, msgsize: int) -> list[Buffer]:
    """How a message travels: itself when shorter than ``msgsize``, else ``msgsize`` pieces
    and a shorter (possibly empty) last one."""
    view = memoryview(data).cast("B")
    size = view.nbytes
    if size < msgsize:
        return [data]
    out: list[Buffer] = [view[i : i + msgsize] for i in range(0, size, msgsize)]
    if size % msgsize == 0:
        out.append(b"")
    return out

"""How a shared-memory channel's peer ended: finished, or failed (docs/mechanisms/shm.md).

A side that ends after an error (a ``with`` block or ``serve()`` handler left by an exception)
sends :func:`failed_frame` on the liveness socket, then lets go of its sending ring without
marking it closed (``_link.Link.close``). Both rings of the other side call their ``on_end``
hook, :class:`PeerEnd` (the receiving ring) and :meth:`PeerEnd.sending` (the sending ring),
when they see the peer's end; the hook reads that frame, if any, and makes the end
``ChannelBroken`` naming the peer's reason, so a side that only sends is told the same as
one that receives.
"""

from __future__ import annotations

import socket
from typing import Final

import msgspec

from ipcwire._core.codecs import DECODE_ERRORS
from ipcwire._core.ending import failed_error
from ipcwire._core.framing import MAX_REASON, readable_reason
from ipcwire.errors import ChannelBroken, EndOfChannel

__all__ = ["MAX_REASON", "PeerEnd", "failed_frame"]

_MAX_FRAME: Final = 4 + MAX_REASON * 6 + 64  # (JSON may write one byte as 6)


def failed_frame(reason: str) -> bytes:
    """The last message of a side that ends after an error: as the setup's messages, a 4-byte
    big-endian length and a JSON object, ``{"shm": 1, "failed": reason}``."""
    text = reason.encode("utf-8", "replace")[:MAX_REASON].decode("utf-8", "ignore")
    body = msgspec.json.encode({"shm": 1, "failed": text})
    return len(body).to_bytes(4, "big") + body


class PeerEnd:
    """The receiving ring's ``on_end`` hook (:meth:`sending` is the sending ring's): when the
    peer's end is seen (it closed, or went away), whether it said on the liveness socket that
    it ended after an error. Then the end is ``ChannelBroken`` naming the peer's reason, else
    the ring's own error. The socket is read once, without waiting, for both rings: the peer
    sends the reason before it lets go of either ring."""

    def __init__(self, sock: socket.socket, url: str, who: str) -> None:
        self.sock = sock
        self.url = url
        self.who = who
        self.reason: str | None = None  # None: not read yet; "": nothing said

    def __call__(self, exc: Exception) -> Exception:
        return self._told(exc, sending=False)

    def sending(self, exc: Exception) -> Exception:
        """The sending ring's hook: the peer stopped reading (closed its end, or went away)."""
        return self._told(exc, sending=True)

    def _told(self, exc: Exception, *, sending: bool) -> Exception:
        if not isinstance(exc, EndOfChannel | ChannelBroken):
            return exc
        if self.reason is None:
            self.reason = self._read()
        if not self.reason:
            return exc
        if sending:
            then = (
                "nothing more can be sent to it; every message it sent before that can still "
                "be received"
            )
            return failed_error(self.who, self.reason, self.url, then=then)
        if "discarded" in str(exc):  # the rings' "... the partial message was discarded"
            then = (
                "it did so in the middle of a message, which was discarded; every whole "
                "message it sent before that was delivered"
            )
            return failed_error(self.who, self.reason, self.url, then=then)
        return failed_error(self.who, self.reason, self.url)

    def _read(self) -> str:
        """The reason the peer sent (readable, at most MAX_REASON bytes of it), or ""."""
        data = b""
        try:
            self.sock.setblocking(False)  # (a timeout would wait for readability first)
            while len(data) < _MAX_FRAME:
                got = self.sock.recv(_MAX_FRAME - len(data), socket.MSG_DONTWAIT)
                if not got:
                    break
                data += got
        except OSError:
            pass  # nothing more now (or the socket is closed): what came is all there is
        size = int.from_bytes(data[:4], "big")
        if len(data) < 4 or len(data) < 4 + size:
            return ""
        try:
            msg = msgspec.json.decode(data[4 : 4 + size])
        except DECODE_ERRORS:
            return ""
        if not isinstance(msg, dict) or msg.get("shm") != 1:
            return ""
        failed = msg.get("failed")
        if not isinstance(failed, str) or not failed:
            return ""
        return readable_reason(failed.encode("utf-8", "replace")[:MAX_REASON]) or "?"

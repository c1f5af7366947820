"""Which socket a Unix socket is connected to, as the kernel says (sock_diag, ``ss -x``).

The server uses it to refuse doorbells whose other end it holds itself (both ends of one
socketpair in one setup, or the other end given to it in another connection): such a doorbell
never hangs up when the client dies, and a client that kept a copy of the server's end can
undo any timeout set on it, so nothing short of refusing it keeps a parked waiter from waiting
for ever. Linux only (``CONFIG_UNIX_DIAG``, loaded on demand on common kernels); where the
kernel does not answer, :func:`peer_inode` returns None and the caller falls back on what it
can check without it.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Final

__all__ = ["inode", "peer_inode"]

_NETLINK_SOCK_DIAG: Final = 4
_SOCK_DIAG_BY_FAMILY: Final = 20
_NLM_F_REQUEST: Final = 1
_NLMSG_ERROR: Final = 2
_UDIAG_SHOW_PEER: Final = 4
_UNIX_DIAG_PEER: Final = 2
_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_REQ = struct.Struct("=BBHIIIII")  # unix_diag_req: family, protocol, pad, states, ino, show, cookie
_MSG_SIZE: Final = 16  # unix_diag_msg: family, type, state, pad, ino, cookie[2]
_ATTR = struct.Struct("=HH")  # rtattr: len, type

_unavailable = False


def inode(fd: int) -> int:
    """The socket's inode number (what sock_diag names it by)."""
    return os.fstat(fd).st_ino


def peer_inode(fd: int) -> int | None:
    """The inode of the socket at the other end of the connected Unix socket ``fd``; None if
    the kernel does not say (no sock_diag here, or no peer)."""
    global _unavailable
    if _unavailable:
        return None
    try:
        nl = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG)
    except OSError:
        _unavailable = True
        return None
    with nl:
        req = _REQ.pack(
            socket.AF_UNIX,
            0,
            0,
            0xFFFFFFFF,
            inode(fd),
            _UDIAG_SHOW_PEER,
            ~0 & 0xFFFFFFFF,
            ~0 & 0xFFFFFFFF,
        )
        try:
            nl.send(
                _NLMSG.pack(_NLMSG.size + len(req), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0)
                + req
            )
            nl.settimeout(1.0)
            data = nl.recv(8192)
        except OSError:
            _unavailable = True
            return None
    if len(data) < _NLMSG.size:
        return None
    length, kind, _, _, _ = _NLMSG.unpack_from(data)
    if kind == _NLMSG_ERROR:
        return None  # (ENOENT: not found; EOPNOTSUPP...: no unix_diag)
    off = _NLMSG.size + _MSG_SIZE
    end = min(length, len(data))
    while off + _ATTR.size <= end:
        alen, atype = _ATTR.unpack_from(data, off)
        if alen < _ATTR.size:
            break
        if atype == _UNIX_DIAG_PEER and alen >= _ATTR.size + 4:
            return int(struct.unpack_from("=I", data, off + _ATTR.size)[0])
        off += (alen + 3) & ~3
    return None

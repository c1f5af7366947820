"""What the tcp and udp checks share: whether an address is this machine's, whether a socket
bound to one address receives what is sent to another, and who owns a socket."""

from __future__ import annotations

import ipaddress
import socket

from ipcwire._procfs import describe_pid, pids_for_inodes

__all__ = ["covers", "is_local", "owner"]


def is_local(addr: str, family: int, kind: int) -> bool:
    """Whether ``addr`` belongs to this machine (a trial bind to port 0 succeeds); ``kind``:
    SOCK_STREAM or SOCK_DGRAM."""
    try:
        if ipaddress.ip_address(addr).is_loopback:
            return True
    except ValueError:
        return False
    with socket.socket(family, kind) as s:
        try:
            s.bind((addr, 0))
        except OSError:
            return False
    return True


def covers(bound: str, addr: str) -> bool:
    """Whether a socket bound to ``bound`` (as /proc shows it) is reached at ``addr``."""
    if bound in ("0.0.0.0", "::"):  # noqa: S104 - the wildcard, read from /proc
        return bound == "::" or ":" not in addr
    return bound == addr


def owner(inode: int, uid: int) -> str:
    """The processes holding the socket ``inode`` ("pid 12 (python3 app.py)"), or its uid."""
    pids = pids_for_inodes({inode})
    return ", ".join(describe_pid(p) for p in pids) if pids else f"a process of uid {uid}"

"""What the tcp and udp checks share: whether an address is this machine's, whether a socket
bound to one address receives what is sent to another, and who owns a socket."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket

from ipcwire._procfs import describe_pid, pids_for_inodes
from ipcwire.doctor._model import Report

__all__ = ["bind_failed", "conflicts", "covers", "is_local", "os_error", "owner"]


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


def conflicts(bound: str, addr: str) -> bool:
    """Whether a socket bound to ``bound`` (as /proc shows it) keeps a bind to ``addr`` on the
    same port: the same address, or a wildcard on either side (of the same family, or ::)."""
    wild = ("0.0.0.0", "::")  # noqa: S104 - the wildcard, read from /proc
    if bound in wild or addr in wild:
        return bound == "::" or addr == "::" or (":" in addr) == (":" in bound)
    return bound == addr


def owner(inode: int, uid: int) -> str:
    """The processes holding the socket ``inode`` ("pid 12 (python3 app.py)"), or its uid."""
    pids = pids_for_inodes({inode})
    return ", ".join(describe_pid(p) for p in pids) if pids else f"a process of uid {uid}"


def bind_failed(
    report: Report,
    kind: str,
    code: int,
    *,
    port: int,
    addr: str,
    shown: str,
    local: bool,
    evidence: list[str],
    who: str,
    inodes: set[int],
) -> None:
    """Report why a trial bind of ``kind`` ("tcp", "udp") to ``shown`` failed with ``code``:
    in use (by ``who``, the sockets ``inodes``), a privileged port, not this machine's
    address, or another error."""
    if code == errno.EADDRINUSE:
        pids = pids_for_inodes(inodes)
        fix = f"stop {describe_pid(pids[0])} (kill {pids[0]})" if pids else "stop that server"
        report.add(f"{kind}.in_use", "problem",
                   f"{kind.upper()} port {port} is in use by {who}", evidence,
                   f"{fix}, choose another port, or use port 0 for any free one",
                   pids=pids)  # fmt: skip
    elif code in (errno.EACCES, errno.EPERM):
        report.add(f"{kind}.privileged", "problem", f"port {port} is below 1024 and needs "
                   "privileges", evidence, "use a port of 1024 or more")  # fmt: skip
    elif code == errno.EADDRNOTAVAIL or not local:
        fix = "listen on 127.0.0.1 (this machine only) or 0.0.0.0 (every address)"
        report.add(f"{kind}.not_local", "problem", f"{addr} is not an address of this machine",
                   evidence, fix)  # fmt: skip
    else:
        report.add(f"{kind}.error", "problem", f"bind to {shown} failed: {os_error(code)}",
                   evidence)  # fmt: skip


def os_error(code: int) -> str:
    """``ENETUNREACH (Network is unreachable)``."""
    return f"{errno.errorcode.get(code, str(code))} ({os.strerror(code)})"

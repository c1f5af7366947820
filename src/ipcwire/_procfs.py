"""Who owns a socket: read from /proc on Linux (best effort; None elsewhere or when hidden).

Used to name the live process behind EADDRINUSE, and by ``ipcwire doctor``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

__all__ = [
    "describe_pid",
    "pids_for_inodes",
    "tcp_listener_inodes",
    "unix_socket_inodes",
]

_PROC = Path("/proc")


def unix_socket_inodes(path: str) -> set[int]:
    """Inodes of sockets bound to ``path`` (``@name`` for the abstract namespace)."""
    want = path
    found: set[int] = set()
    try:
        lines = (_PROC / "net" / "unix").read_text().splitlines()[1:]
    except OSError:
        return found
    for line in lines:
        fields = line.split(None, 7)
        if len(fields) == 8 and fields[7] == want:
            found.add(int(fields[6]))
    return found


def _hex_addr(host: str, port: int, family: socket.AddressFamily) -> str:
    packed = socket.inet_pton(family, host)
    if family == socket.AF_INET:
        return f"{int.from_bytes(packed, 'little'):08X}:{port:04X}"
    words = [int.from_bytes(packed[i : i + 4], "little") for i in range(0, 16, 4)]
    return "".join(f"{w:08X}" for w in words) + f":{port:04X}"


def tcp_listener_inodes(port: int, host: str | None = None) -> set[int]:
    """Inodes of TCP sockets listening on ``port`` (on ``host``, or on any address)."""
    found: set[int] = set()
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            lines = (_PROC / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        suffix = f":{port:04X}"
        exact = None
        if host:
            try:
                exact = _hex_addr(host, port, family)
            except OSError:
                exact = None
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != "0A":  # 0A = LISTEN
                continue
            local = fields[1]
            if not local.endswith(suffix):
                continue
            if host and exact is not None and local != exact:
                wildcard = local.split(":")[0].strip("0") == ""
                if not wildcard:
                    continue
            found.add(int(fields[9]))
    return found


def pids_for_inodes(inodes: set[int]) -> list[int]:
    """Processes holding any of these socket inodes open (only those we may inspect)."""
    if not inodes:
        return []
    targets = {f"socket:[{i}]" for i in inodes}
    pids: list[int] = []
    try:
        entries = os.listdir(_PROC)
    except OSError:
        return pids
    for entry in entries:
        if not entry.isdigit():
            continue
        fd_dir = _PROC / entry / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd_dir / fd) in targets:
                    pids.append(int(entry))
                    break
            except OSError:
                continue
    return sorted(pids)


def describe_pid(pid: int) -> str:
    """``pid 1234 (python3 server.py)``, or just ``pid 1234``."""
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
        cmd = " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)
    except OSError:
        cmd = ""
    if len(cmd) > 80:
        cmd = cmd[:77] + "..."
    return f"pid {pid} ({cmd})" if cmd else f"pid {pid}"

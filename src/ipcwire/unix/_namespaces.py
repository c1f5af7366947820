"""Which Linux namespaces this process is in, for error messages and doctor's hints.

A sandbox or container gives a process its own network namespace (abstract socket names and
127.0.0.1 are then its own, and the kernel's socket tables show only its sockets), its own
pid namespace (pids of other processes do not mean the same there), and often its own user
namespace (uids not mapped into it show as the overflow uid, 65534). None of this is an
error; the words of an error that meets it should say so.

The first namespaces of each kind have fixed inode numbers (include/linux/proc_ns.h: pid
0xEFFFFFFC since Linux 3.8; net 0xEFFFFFF9 on recent kernels); namespaces made later are
numbered from 0xF0000000 up.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Final

__all__ = [
    "in_other_net_namespace",
    "in_other_pid_namespace",
    "is_mount_point",
    "net_namespace_hint",
    "overflow_uid",
    "pid_namespace_hint",
    "unmapped_uid",
]

_FIRST_DYNAMIC: Final = 0xF0000000
_INIT_PID_NS: Final = 0xEFFFFFFC


def _ns_inode(pid: str, kind: str) -> int | None:
    try:
        link = os.readlink(f"/proc/{pid}/ns/{kind}")  # "net:[4026531833]"
        return int(link.rsplit("[", 1)[1].rstrip("]"))
    except (OSError, ValueError, IndexError):
        return None


def in_other_pid_namespace() -> bool:
    """Whether this process is in another pid namespace than the machine's first one."""
    mine = _ns_inode("self", "pid")
    if mine is not None and mine != _INIT_PID_NS:
        return True
    # One pid per level below the namespace /proc was mounted for: "NSpid: 4711 1"
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return len(line.split()) > 2
    return False


def in_other_net_namespace() -> bool:
    """Whether this process is (probably) in its own network namespace, not the machine's:
    its namespace is not pid 1's (when that can be read), or it has no interface but lo."""
    mine = _ns_inode("self", "net")
    if mine is not None and mine < _FIRST_DYNAMIC:
        return False  # the first namespace's fixed number
    init = _ns_inode("1", "net")
    if mine is not None and init is not None and mine != init:
        return True
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return False
    return names == ["lo"] or not names


def net_namespace_hint() -> str | None:
    """Words for an error when this process is in its own network namespace, else None."""
    if not in_other_net_namespace():
        return None
    return (
        "this process is in its own network namespace (a container or sandbox: it has no "
        "network interface but lo, or not the one pid 1 has)"
    )


def pid_namespace_hint() -> str | None:
    """Words for an error when this process is in its own pid namespace, else None."""
    if not in_other_pid_namespace():
        return None
    return "this process is in its own pid namespace (a container or sandbox)"


def overflow_uid() -> int:
    """The uid the kernel shows for a uid not mapped into this user namespace (65534)."""
    try:
        return int(Path("/proc/sys/kernel/overflowuid").read_text())
    except (OSError, ValueError):
        return 65534


def _in_initial_user_namespace() -> bool:
    try:
        return Path("/proc/self/uid_map").read_text().split() == ["0", "0", "4294967295"]
    except OSError:
        return True


def unmapped_uid(uid: int | None) -> bool:
    """Whether the kernel showing ``uid`` (of a peer) may mean "not mapped into this user
    namespace": it is the overflow uid and this process is in a user namespace of its own
    (in the first one every uid is mapped, and 65534 is nobody)."""
    return uid is not None and uid == overflow_uid() and not _in_initial_user_namespace()


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def is_mount_point(path: str) -> bool:
    """Whether ``path`` is a mount point in this process's mount namespace (a file bind-mounted
    on its own, as ``docker run -v /run/app.sock:/run/app.sock`` does)."""
    path = os.path.abspath(path)
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return False
    return any(len(f := line.split()) > 4 and _unescape(f[4]) == path for line in lines)

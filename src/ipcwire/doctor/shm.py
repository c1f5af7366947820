"""``ipcwire doctor --shm`` and ``doctor shm://name``: leaked segments and corrupt rings.

* /dev/shm: every segment, who maps or holds it (every process's maps and descriptors, and
  /proc/locks); a segment nobody uses is leaked memory (tmpfs keeps it until removed or
  reboot). The size of /dev/shm against its use (Docker's default is 64 MiB).
* ipcwire's rings live in anonymous memfds (``memfd:ipcwire-shm``), which vanish with their
  last user, so they cannot leak; their headers are checked in place, through the process
  that maps them, with the shm module's own validation (the same checks as ring.c).
"""

from __future__ import annotations

import os
import re
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from ipcwire._procfs import all_pids, describe_pid, fd_targets, lock_owners, memory_maps
from ipcwire.doctor._model import Report, Status
from ipcwire.doctor.queues import mq_lock_name
from ipcwire.shm import _layout as L

__all__ = [
    "DEV_SHM",
    "Ring",
    "Usage",
    "check_shm",
    "check_shm_url",
    "ring_problems",
    "scan_usage",
    "size_text",
]

DEV_SHM: Final = "/dev/shm"  # noqa: S108 - the POSIX shared-memory mount, read only
DOCKER_DEFAULT: Final = 64 * 1024 * 1024
_HEAD: Final = struct.Struct("=QIIQ")
_INDEX: Final = struct.Struct("=Q")
_END_PIPE: Final = re.compile(r"ipcwire-mq\..+\.end")


@dataclass(slots=True)
class Ring:
    """One ipcwire ring segment: the processes mapping it, and a path that opens it."""

    pids: set[int]
    path: str
    size: int


@dataclass(slots=True)
class Usage:
    """Who uses what: path -> pids (maps or descriptors); memfd rings: inode -> (pid, how to
    open it); how many processes could not be inspected (other users', without root)."""

    users: dict[str, set[int]] = field(default_factory=dict)
    rings: dict[int, Ring] = field(default_factory=dict)  # by the memfd's inode
    hidden: list[int] = field(default_factory=list)


def scan_usage() -> Usage:
    """Read every visible process's mappings and descriptors once."""
    from ipcwire.shm._segment import MEMFD_NAME  # the name ipcwire gives its ring memfds

    memfd = f"/memfd:{MEMFD_NAME}"
    usage = Usage()
    for pid in all_pids():
        maps = memory_maps(pid)
        fds = fd_targets(pid)
        if not maps and not fds and _hidden(pid):
            usage.hidden.append(pid)
            continue
        for m in maps:
            usage.users.setdefault(m.path.removesuffix(" (deleted)"), set()).add(pid)
            if m.path.startswith(memfd) and m.offset == 0:
                _note_ring(usage, pid, m.map_file(pid))
        for fd, target in fds.items():
            usage.users.setdefault(target, set()).add(pid)
            if target.startswith(memfd):
                _note_ring(usage, pid, f"/proc/{pid}/fd/{fd}")
    return usage


def _hidden(pid: int) -> bool:
    """Whether ``pid`` exists but its mappings may not be read by us (another user's)."""
    try:
        with open(f"/proc/{pid}/maps", "rb"):
            return False
    except PermissionError:
        return True
    except OSError:
        return False  # gone meanwhile


def _note_ring(usage: Usage, pid: int, path: str) -> None:
    try:
        st = os.stat(path)
    except OSError:
        return
    ring = usage.rings.setdefault(st.st_ino, Ring(set(), path, st.st_size))
    ring.pids.add(pid)


def ring_problems(read_at: Callable[[int, int], bytes], size: int) -> list[str]:
    """What is wrong with the ring headers of a segment (ring 0 at offset 0, ring 1 after it),
    by the shm module's checks plus the index invariants; empty when both are sound."""
    problems = []
    offset = 0
    for ring in (0, 1):
        head = read_at(offset, L.HEADER_SIZE)
        if len(head) < L.HEADER_SIZE:
            problems.append(f"ring {ring} at offset {offset}: the segment ends inside its header")
            break
        magic, version, header_size, capacity = _HEAD.unpack_from(head, 0)
        why = L.header_problem(magic, version, header_size, capacity, size - offset)
        if why:
            problems.append(f"ring {ring} at offset {offset}: {why}")
            break
        tail = _INDEX.unpack_from(head, L.TAIL * 8)[0]
        consumed = _INDEX.unpack_from(head, L.HEAD * 8)[0]
        if consumed > tail or tail - consumed > capacity or (tail | consumed) % L.ALIGN:
            problems.append(f"ring {ring} at offset {offset}: impossible indices (head "
                            f"{consumed}, tail {tail}, capacity {capacity})")  # fmt: skip
        offset += L.ring_span(capacity)
        if offset >= size:
            break
    return problems


def _reader(path: str) -> tuple[Callable[[int, int], bytes], Callable[[], None]] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    return (lambda off, n: os.pread(fd, n, off)), (lambda: os.close(fd))


def _has_magic(path: str) -> bool:
    opened = _reader(path)
    if opened is None:
        return False
    read, close = opened
    try:
        data = read(0, 8)
    finally:
        close()
    return len(data) == 8 and _INDEX.unpack(data)[0] == L.MAGIC


def _check_ring_file(report: Report, path: str, size: int, who: str) -> bool:
    """Validate the rings of one segment; True when sound (a finding when not)."""
    opened = _reader(path)
    if opened is None:
        return True
    read, close = opened
    try:
        problems = ring_problems(read, size)
    finally:
        close()
    if problems:
        report.add(
            "shm.corrupt_ring",
            "problem",
            f"an ipcwire ring header fails validation in {who}",
            problems,
            "the process that wrote it is buggy or hostile (ipcwire's ends refuse such a ring "
            "with RemoteProtocolError, never reading out of bounds): close that channel, "
            "restart both processes, and report it if ipcwire wrote it",
            path=path,
            problems=problems,
        )
    return not problems


def _check_segment(report: Report, path: str, usage: Usage, locks: dict[int, list[int]]) -> None:
    try:
        st = os.lstat(path)
    except OSError:
        return
    if stat.S_ISFIFO(st.st_mode) and _END_PIPE.fullmatch(os.path.basename(path)):
        _check_end_pipe(report, path, usage)
        return
    if not stat.S_ISREG(st.st_mode) or mq_lock_name(path) is not None:
        return  # an mq listener's lock file: the mq and machine checks read those
    users = usage.users.get(path, set()) | set(locks.get(st.st_ino, []))
    ours = os.path.basename(path).startswith("ipcwire") or _has_magic(path)
    evidence = [f"{path}: {st.st_size} bytes, mode {stat.S_IMODE(st.st_mode):04o}, "
                f"uid {st.st_uid}"]  # fmt: skip
    if _has_magic(path):
        _check_ring_file(report, path, st.st_size, path)
    if users:
        report.add("shm.segment", "ok", f"{path} in use by "
                   f"{', '.join(describe_pid(p) for p in sorted(users))}", evidence,
                   path=path, pids=sorted(users), size=st.st_size)  # fmt: skip
        return
    evidence.append("no process maps it, holds it open or locks it")
    fix = f"rm {path}  (tmpfs keeps it until it is removed or the machine reboots)"
    if usage.hidden:
        hidden = ", ".join(describe_pid(p) for p in usage.hidden[:5])
        evidence.append(f"not inspectable here: {hidden}")
        fix = f"make sure {hidden} does not use it, then " + fix
    status: Status = "warning" if st.st_size == 0 else "problem"
    report.add(
        "shm.leaked",
        status,
        f"{path} is leaked: {st.st_size} bytes of shared memory nobody uses"
        + (" (an ipcwire segment)" if ours else ""),
        evidence,
        fix,
        path=path,
        size=st.st_size,
    )


def _check_end_pipe(report: Report, path: str, usage: Usage) -> None:
    """An mq channel's end pipe (ipcwire/mq/_ends.py) still named in /dev/shm: both ends
    unlink it once the channel is open, so one that nobody holds was left by a client killed
    between creating its queues and announcing them (its queues are left too)."""
    users = usage.users.get(path, set())
    if users:
        report.add("mq.end_pipe", "ok", f"{path}: an mq channel opening, held by "
                   f"{', '.join(describe_pid(p) for p in sorted(users))}", path=path,
                   pids=sorted(users))  # fmt: skip
        return
    pair = os.path.basename(path).removeprefix("ipcwire-mq.").removesuffix(".end")
    report.add(
        "mq.end_pipe_leaked",
        "warning",
        f"{path} is left over: the end pipe of an mq channel that never opened (a client "
        f"killed while connecting); nobody holds it",
        [f"{path}: a FIFO, no process has it open"],
        f"rm {path}; and remove that client's queues if they are left too: ls /dev/mqueue "
        f"(mount -t mqueue none /dev/mqueue) for /{pair}.up and /{pair}.dn, or ipcwire "
        f"doctor mq:///{pair}.up",
        path=path,
    )


def _check_capacity(report: Report) -> None:
    try:
        vfs = os.statvfs(DEV_SHM)
    except OSError:
        report.add("shm.mount", "warning", f"{DEV_SHM} is not mounted: POSIX shared memory "
                   "(shm_open, multiprocessing.shared_memory) will fail",
                   fix="mount -t tmpfs tmpfs /dev/shm")  # fmt: skip
        return
    total = vfs.f_blocks * vfs.f_frsize
    used = total - vfs.f_bfree * vfs.f_frsize
    evidence = [f"statvfs({DEV_SHM}): {used} of {total} bytes used, {vfs.f_files - vfs.f_ffree} "
                f"of {vfs.f_files} inodes"]  # fmt: skip
    docker = " (Docker's default)" if total == DOCKER_DEFAULT else ""
    if vfs.f_files and not vfs.f_ffree:
        report.add("shm.inodes", "problem", f"{DEV_SHM} has no free inode: no file can be made "
                   f"there. {_DEPENDS}: every mq:// listen() fails (ResourceExhausted: no room "
                   "for its lock file)", evidence, "remove what is stale there (ls -la "
                   f"{DEV_SHM}), or remount it with more inodes as root (mount -o remount,"
                   f"nr_inodes=65536 {DEV_SHM}; in a container that needs CAP_SYS_ADMIN, or a "
                   "tmpfs given when it starts: docker run --tmpfs /dev/shm:size=64m,"
                   "nr_inodes=65536)", used=used, total=total,
                   inodes=vfs.f_files)  # fmt: skip
    if total and used > 0.8 * total:
        report.add("shm.full", "problem", f"{DEV_SHM} is {used * 100 // total}% full "
                   f"({size_text(used)} of {size_text(total)}{docker}). {_DEPENDS}", evidence,
                   "remove leaked segments (listed here), or enlarge it (docker run "
                   "--shm-size=256m, or mount -o remount,size=256m /dev/shm as root)",
                   used=used, total=total)  # fmt: skip
    elif total < DOCKER_DEFAULT:
        report.add("shm.small", "warning", f"{DEV_SHM} holds only {size_text(total)} (Docker's "
                   f"default is 64 MiB). {_DEPENDS}: larger segments of theirs fail with "
                   "SIGBUS or ENOSPC", evidence, "run the container with --shm-size=256m (or "
                   "mount a larger tmpfs) if such a program needs it", used=used,
                   total=total)  # fmt: skip
    else:
        report.add("shm.size", "info", f"{DEV_SHM}: {size_text(used)} used of "
                   f"{size_text(total)}{docker}", evidence, used=used,
                   total=total)  # fmt: skip


# What lives in /dev/shm, and what does not (docs/containers.md).
_DEPENDS: Final = (
    "ipcwire's shm:// does not use it (its rings are memfds); what does: ipcwire's mq:// "
    "lock files and end pipes (a few bytes and an inode each), and other programs' POSIX "
    "shared memory (shm_open, multiprocessing.shared_memory)"
)


def size_text(n: int) -> str:
    """``n`` bytes in the largest unit that keeps it at least 1: ``64 KiB``, ``1.5 MiB``."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


def _check_rings(report: Report, usage: Usage, only: set[int] | None = None) -> None:
    sound, seen = 0, []
    for ring in usage.rings.values():
        if only is not None and not ring.pids & only:
            continue
        who = " and ".join(describe_pid(p) for p in sorted(ring.pids))
        seen.append(f"{who}: {ring.size} bytes")
        if _check_ring_file(report, ring.path, ring.size, f"the segment of {who}"):
            sound += 1
    if seen:
        report.add("shm.rings", "info", f"{len(seen)} ipcwire shared-memory segment(s) in use, "
                   f"{sound} with sound ring headers", seen)  # fmt: skip


def check_shm(name: str | None = None, *, report: Report | None = None) -> Report:
    """``name``: one segment (/dev/shm/NAME); None: all of /dev/shm. Both check the headers of
    every ipcwire ring in use."""
    report = report or Report(os.path.join(DEV_SHM, name) if name else "shared memory")
    usage = scan_usage()
    locks = lock_owners()
    if name is not None:
        path = os.path.join(DEV_SHM, name.lstrip("/"))
        if os.path.lexists(path):
            _check_segment(report, path, usage, locks)
        else:
            report.add("shm.no_segment", "info", f"no {path}")
    else:
        try:
            names = sorted(os.listdir(DEV_SHM))
        except OSError:
            names = []
        for entry in names:
            _check_segment(report, os.path.join(DEV_SHM, entry), usage, locks)
        _check_capacity(report)
    _check_rings(report, usage)
    return report


def check_shm_url(url: str, *, listen: bool = False) -> Report:
    """``doctor shm://name``: the listener's rendezvous socket (the Unix socket named by the
    shm module: stale? live, which pid? permissions?), then the rings the listener maps (one
    per connection, shared with each client)."""
    from ipcwire._core.url import parse_url
    from ipcwire.doctor.unix import check_unix
    from ipcwire.errors import IpcwireError
    from ipcwire.shm._naming import socket_path

    report = Report(url)
    try:
        path = socket_path(parse_url(url))
    except IpcwireError as exc:
        report.add("shm.url", "problem", str(exc), fix="fix the name in the URL")
        return report
    report.add("shm.rendezvous", "info", f"the listener's Unix socket is {path}",
               [f"{url} -> {path} (ipcwire.shm._naming.socket_path)"], path=path)  # fmt: skip
    check_unix(path, listen=listen, report=report)
    live = report.find("unix.live") + report.find("unix.in_use")
    pids = {f.data["pid"] for f in live if f.data.get("pid")}
    if pids:
        _check_rings(report, scan_usage(), pids)
    return report

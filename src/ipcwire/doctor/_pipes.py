"""What a process is blocked on, read from /proc, and the wait-for graph between processes.

A thread asleep in ``pipe_write`` (``anon_pipe_write`` on newer kernels) waits for room in a
full pipe; /proc/PID/syscall names the descriptor, /proc/PID/fd the pipe's inode, and the
pipe's fill level is its FIONREAD, read through a fresh read-only open of /proc/PID/fd/N
(which reads nothing out of it). The processes that could end the wait are the pipe's other
holders: its readers for a writer, its writers for a reader, the children for ``wait()``.
A cycle of such waits, where every process in it has nothing else that could make it
progress, is a deadlock.
"""

from __future__ import annotations

import array
import fcntl
import os
import platform
import stat
import termios
from dataclasses import dataclass, field
from typing import Final, Literal

from ipcwire._procfs import (
    children_of,
    current_syscall,
    fd_flags,
    fd_targets,
    holders,
    proc_stat,
    thread_ids,
    wchan,
)

__all__ = [
    "Edge",
    "PipeRef",
    "ThreadWait",
    "Waits",
    "edges_of",
    "find_deadlock",
    "pipe_fill",
    "waits_of",
]

WaitKind = Literal["write_pipe", "read_pipe", "wait_child", "lock", "poll", "running", "other"]
# The read/write family of system calls (fd is the first argument), per architecture.
_RW_SYSCALLS: Final = {
    "x86_64": {0: "read", 1: "write", 17: "pread64", 18: "pwrite64", 19: "readv", 20: "writev"},
    "aarch64": {63: "read", 64: "write", 65: "readv", 66: "writev", 67: "pread64",
                68: "pwrite64"},
}  # fmt: skip
_F_GETPIPE_SZ: Final = getattr(fcntl, "F_GETPIPE_SZ", 1032)
_STUCK: Final = frozenset({"write_pipe", "read_pipe", "wait_child", "lock"})


@dataclass(frozen=True, slots=True)
class PipeRef:
    """One descriptor on a pipe or FIFO: ``key`` is what /proc/PID/fd/N reads as."""

    pid: int
    fd: int
    key: str
    reads: bool
    writes: bool


@dataclass(frozen=True, slots=True)
class ThreadWait:
    """What one thread is doing: ``kind``, and the pipe descriptor when it is in read/write."""

    tid: int
    state: str
    wchan: str | None
    kind: WaitKind
    fd: int | None = None
    syscall: str | None = None

    def text(self) -> str:
        """``thread 1234: write(fd 1) in anon_pipe_write``."""
        call = f"{self.syscall}(fd {self.fd})" if self.syscall and self.fd is not None else ""
        where = f"in {self.wchan}" if self.wchan else f"state {self.state}"
        return f"thread {self.tid}: {call + ' ' if call else ''}{where}".strip()


@dataclass(slots=True)
class Waits:
    """A process's threads, its pipe descriptors and whether it can make progress alone."""

    pid: int
    threads: list[ThreadWait] = field(default_factory=list)
    pipes: dict[int, PipeRef] = field(default_factory=dict)

    @property
    def stuck(self) -> bool:
        """Every thread waits on a pipe, a child or a lock: nothing inside can move it on."""
        kinds = {t.kind for t in self.threads}
        return bool(kinds) and kinds <= _STUCK and bool(kinds - {"lock"})


def _is_pipe(pid: int, fd: int, target: str) -> bool:
    if target.startswith("pipe:["):
        return True
    if not target.startswith("/"):
        return False
    try:
        return stat.S_ISFIFO(os.stat(f"/proc/{pid}/fd/{fd}").st_mode)
    except OSError:
        return False


def pipe_refs(pid: int) -> dict[int, PipeRef]:
    """The pipes and FIFOs ``pid`` has open, by descriptor."""
    out = {}
    for fd, target in fd_targets(pid).items():
        if _is_pipe(pid, fd, target):
            flags = fd_flags(pid, fd)
            mode = (flags or 0) & os.O_ACCMODE
            out[fd] = PipeRef(pid, fd, target, mode in (os.O_RDONLY, os.O_RDWR),
                              mode in (os.O_WRONLY, os.O_RDWR))  # fmt: skip
    return out


def pipe_fill(pid: int, fd: int) -> tuple[int, int] | None:
    """(bytes queued, capacity) of the pipe behind ``pid``'s ``fd``; None when unreadable."""
    try:
        probe = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        queued = array.array("i", [0])
        fcntl.ioctl(probe, termios.FIONREAD, queued)
        return queued[0], int(fcntl.fcntl(probe, _F_GETPIPE_SZ))
    except OSError:
        return None
    finally:
        os.close(probe)


def _classify(pid: int, tid: int) -> ThreadWait:
    st = proc_stat(pid, tid)
    state = st.state if st else "?"
    where = wchan(pid, tid)
    call = current_syscall(pid, tid)
    names = _RW_SYSCALLS.get(platform.machine(), {})
    syscall = names.get(call[0]) if call else None
    fd = call[1][0] if call and syscall else None
    kind: WaitKind = "other"
    text = where or ""
    if state == "R":
        kind = "running"
    elif "pipe_write" in text:
        kind = "write_pipe"
    elif "pipe_read" in text:
        kind = "read_pipe"
    elif "do_wait" in text or "waitid" in text:
        kind = "wait_child"
    elif "futex" in text:
        kind = "lock"
    elif any(word in text for word in ("poll", "select", "epoll")):
        kind = "poll"
    return ThreadWait(tid, state, where, kind, fd, syscall)


def waits_of(pid: int) -> Waits:
    """What every thread of ``pid`` waits for, and its pipe descriptors."""
    return Waits(pid, [_classify(pid, tid) for tid in thread_ids(pid)], pipe_refs(pid))


@dataclass(frozen=True, slots=True)
class Edge:
    """``waiter`` cannot go on until one of ``on`` acts; ``why`` says how we know."""

    waiter: int
    on: tuple[int, ...]
    why: str
    pipe: str | None = None


def _others(key: str, want_readers: bool, exclude: int) -> list[PipeRef]:
    found = []
    for pid, fds in holders({key}).items():
        refs = pipe_refs(pid)
        for fd in fds:
            ref = refs.get(fd)
            if ref is not None and (ref.reads if want_readers else ref.writes):
                found.append(ref)
    return [r for r in found if r.pid != exclude]


def edges_of(w: Waits) -> list[Edge]:
    """Who each blocked thread of ``w`` waits on."""
    out = []
    for t in w.threads:
        if t.kind in ("write_pipe", "read_pipe"):
            refs = [w.pipes[t.fd]] if t.fd in w.pipes else []
            if not refs:  # the fd is unknown: every pipe end of that direction
                refs = [r for r in w.pipes.values() if (r.writes if t.kind == "write_pipe"
                                                         else r.reads)]  # fmt: skip
            for ref in refs:
                writing = t.kind == "write_pipe"
                peers = _others(ref.key, want_readers=writing, exclude=w.pid)
                fill = pipe_fill(w.pid, ref.fd)
                level = f", {fill[0]} of {fill[1]} bytes queued" if fill else ""
                if writing and fill and fill[0] < fill[1]:
                    continue  # room left: this write is not what blocks it
                role = "read" if writing else "written"
                ends = ", ".join(f"pid {r.pid} fd {r.fd}" for r in peers) or "no other process"
                why = f"{t.text()} on {ref.key}{level}; {role} elsewhere by: {ends}"
                out.append(Edge(w.pid, tuple(sorted({r.pid for r in peers})), why, ref.key))
        elif t.kind == "wait_child":
            kids = tuple(c.pid for c in children_of(w.pid) if c.state != "Z")
            out.append(Edge(w.pid, kids, f"{t.text()}: waits for a child to exit "
                            f"(children: {', '.join(map(str, kids)) or 'none'})"))  # fmt: skip
    return out


def find_deadlock(start: int, limit: int = 64) -> list[Edge] | None:
    """The waits of the processes deadlocked with ``start``, or None when it is not.

    A process is deadlocked when it is stuck (every thread waits on a pipe, a child or a lock)
    and everything that could end each of its waits is deadlocked too: the largest such set
    among the processes reachable from ``start`` (at most ``limit`` of them).
    """
    edges: dict[int, list[Edge]] = {}
    stuck: set[int] = set()
    todo = [start]
    while todo and len(edges) < limit:
        pid = todo.pop()
        if pid in edges:
            continue
        w = waits_of(pid)
        edges[pid] = edges_of(w) if w.stuck else []
        if w.stuck:
            stuck.add(pid)
            todo += [n for e in edges[pid] for n in e.on if n not in edges]
    dead = set(stuck)
    changed = True
    while changed:
        changed = False
        for pid in list(dead):
            if any(n not in dead for e in edges[pid] for n in e.on):
                dead.discard(pid)
                changed = True
    if start not in dead:
        return None
    ordered, seen, queue = [], {start}, [start]
    while queue:
        pid = queue.pop(0)
        for e in edges[pid]:
            ordered.append(e)
            for n in e.on:
                if n not in seen:
                    seen.add(n)
                    queue.append(n)
    return ordered

"""``ipcwire doctor --pid PID``: what a process is stuck on, and what it talks through.

* the pipe-buffer deadlock: the process is blocked writing a full pipe whose reader is itself
  blocked (writing a full pipe back, or in ``wait()`` for this very process);
* zombie children nobody reaps;
* signal dispositions that surprise (SIGTERM ignored or blocked, SIGPIPE left at its default
  in a process that writes to pipes or sockets, SIGCHLD ignored);
* the IPC endpoints it holds: sockets (with their paths and ports), pipes (with fill levels),
  FIFOs, shared memory, message queues, eventfds.
"""

from __future__ import annotations

import os
import signal
import stat
from typing import Final

from ipcwire._procfs import (
    children_of,
    describe_pid,
    fd_targets,
    mapped_files,
    proc_stat,
    proc_status,
    tcp_sockets,
    unix_socket_files,
    unix_socket_table,
)
from ipcwire.doctor._model import Report
from ipcwire.doctor._pipes import Edge, edges_of, find_deadlock, pipe_fill, waits_of

__all__ = ["check_pid", "endpoints", "signal_mask"]

_SHARED_MEMORY: Final = ("/memfd:", "/dev/shm/")  # noqa: S108 - names read from /proc
_STATES: Final = {
    "R": "running",
    "S": "sleeping",
    "D": "in uninterruptible sleep (disk or kernel)",
    "Z": "a zombie",
    "T": "stopped",
    "t": "stopped by a debugger",
    "X": "dead",
    "I": "idle",
}


def signal_mask(hex_mask: str) -> set[int]:
    """Signal numbers set in a /proc/PID/status mask (``SigIgn: 0000000000001000``)."""
    try:
        bits = int(hex_mask, 16)
    except ValueError:
        return set()
    return {n + 1 for n in range(64) if bits >> n & 1}


def _name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def check_pid(pid: int) -> Report:
    """Everything ``doctor --pid`` reports about one process."""
    report = Report(f"pid {pid}")
    st = proc_stat(pid)
    if st is None:
        report.add("pid.missing", "problem", f"there is no process {pid} (or it is hidden "
                   "from this user)", [f"/proc/{pid}/stat cannot be read"],
                   "check the pid (ps -ef)")  # fmt: skip
        return report
    w = waits_of(pid)
    report.add(
        "pid.state",
        "info",
        f"{describe_pid(pid)} is {_STATES.get(st.state, st.state)}, parent {st.ppid}, "
        f"{len(w.threads)} thread(s)",
        [t.text() for t in w.threads],
        state=st.state,
        ppid=st.ppid,
    )
    if st.state == "Z":
        report.add("pid.zombie", "problem", f"pid {pid} has exited but its parent "
                   f"{describe_pid(st.ppid)} has not reaped it", [f"state Z, ppid {st.ppid}"],
                   f"the parent must wait() for it; ipcwire doctor --pid {st.ppid}")  # fmt: skip
        return report
    _check_pipes(pid, report)
    _check_children(pid, report)
    _check_signals(pid, report)
    _check_endpoints(pid, report)
    return report


def _edge_text(e: Edge) -> str:
    return f"pid {e.waiter}: {e.why}"


def _check_pipes(pid: int, report: Report) -> None:
    cycle = find_deadlock(pid)
    if cycle:
        pids = sorted({e.waiter for e in cycle})
        who = " and ".join(describe_pid(p) for p in pids)
        if len(pids) == 1:
            # a pipe only this process reads: it blocked writing more than the pipe holds
            # before reading any of it (one thread, or every thread waiting)
            summary = (f"pipe-buffer deadlock: {who} waits on a full pipe that only it reads "
                       "(it writes more than the pipe holds before reading)")  # fmt: skip
            fix = ("read from the pipe in another thread (or asyncio) while writing, or write "
                   "less than the pipe holds before reading. To unstick it now: "
                   f"kill {pids[0]}")  # fmt: skip
        else:
            summary = (f"pipe-buffer deadlock: {who} each wait for the other (a full pipe that "
                       "only the other reads, or a child's exit while it is blocked writing to "
                       "us)")  # fmt: skip
            fix = ("read and write at the same time: subprocess's communicate() instead of "
                   "write() then read(); ipcwire.spawn() (drains stdout and stderr in the "
                   "background); or threads/asyncio for each pipe. To unstick it now, kill one "
                   f"side (kill {pids[-1]})")  # fmt: skip
        report.add(
            "pid.deadlock",
            "problem",
            summary,
            [_edge_text(e) for e in cycle],
            fix,
            pids=pids,
            pipes=sorted({e.pipe for e in cycle if e.pipe}),
        )
        return
    for edge in edges_of(waits_of(pid)):
        if edge.pipe is None:
            continue
        report.add(
            "pid.blocked_on_pipe",
            "warning",
            f"pid {pid} is blocked on {edge.pipe}, waiting for "
            f"{', '.join(describe_pid(p) for p in edge.on) or 'no other process'}",
            [_edge_text(edge)],
            "if it stays like this, see what the other side does: ipcwire doctor --pid "
            + (str(edge.on[0]) if edge.on else "<the other side>"),
            pipe=edge.pipe,
            waiting_for=list(edge.on),
        )


def _check_children(pid: int, report: Report) -> None:
    zombies = [c for c in children_of(pid) if c.state == "Z"]
    if not zombies:
        return
    report.add(
        "pid.zombies",
        "problem",
        f"{len(zombies)} zombie child(ren): they exited and pid {pid} never waited for them",
        [f"pid {z.pid} ({z.comm}): state Z, parent {pid}" for z in zombies],
        "reap children: Popen.wait()/poll(), os.waitpid(), or ipcwire.spawn (which reaps); "
        "they disappear when the parent exits",
        pids=[z.pid for z in zombies],
    )


def _check_signals(pid: int, report: Report) -> None:
    status = proc_status(pid)
    ignored = signal_mask(status.get("SigIgn", "0"))
    caught = signal_mask(status.get("SigCgt", "0"))
    blocked = signal_mask(status.get("SigBlk", "0"))
    masks = (("SigIgn", ignored), ("SigCgt", caught), ("SigBlk", blocked))
    evidence = [
        f"{k}: {status.get(k, '?')} ({', '.join(_name(s) for s in sorted(m)) or '-'})"
        for k, m in masks
    ]
    term = signal.SIGTERM
    if term in ignored or term in blocked:
        how = "ignored" if term in ignored else "blocked"
        report.add(
            "pid.sigterm",
            "warning",
            f"SIGTERM is {how}: `kill {pid}` and service managers' stop do nothing, so shutdown "
            "ends in SIGKILL with no cleanup",
            evidence,
            "handle SIGTERM (ipcwire.signals.graceful_shutdown) instead of ignoring it",
        )
    targets = fd_targets(pid).values()
    talks = any(t.startswith(("pipe:", "socket:")) for t in targets)
    pipe_sig = signal.SIGPIPE
    if pipe_sig not in ignored and pipe_sig not in caught and talks:
        report.add(
            "pid.sigpipe",
            "warning",
            "SIGPIPE has its default action, and this process writes to pipes or sockets: "
            "if a reader goes away, the next write kills it silently (signal 13)",
            evidence,
            "ignore SIGPIPE and handle EPIPE (signal.signal(SIGPIPE, SIG_IGN)); Python does "
            "at start-up, but children started with restore_signals=True get the default back",
        )
    if signal.SIGCHLD in ignored:
        report.add("pid.sigchld", "info", "SIGCHLD is ignored: children are reaped "
                   "automatically, and wait() fails with ECHILD", evidence)  # fmt: skip
    report.add("pid.signals", "info", "signal dispositions", evidence,
               ignored=sorted(ignored), caught=sorted(caught), blocked=sorted(blocked))  # fmt: skip


def _read_head(path: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        return os.read(fd, 64)
    except OSError:
        return b""
    finally:
        os.close(fd)


def _socket_file(bound: str, ident: tuple[int, int] | None) -> str:
    """The path of a socket file now: where it was bound, or (bound in a private directory
    and linked into place, as ipcwire does) the socket file with the same inode nearby."""
    if ident is None or bound.startswith("@"):
        return bound
    parent = os.path.dirname(bound)
    for directory in (parent, os.path.dirname(parent)):
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == ident:
                return path
    return f"{bound} (that file is gone)"


def endpoints(pid: int) -> list[str]:
    """One line per IPC endpoint ``pid`` holds (sockets, pipes, FIFOs, shared memory...)."""
    unix = {e.inode: e for e in unix_socket_table()}
    files = {inode: ident for ident, socks in (unix_socket_files() or {}).items()
             for inode, _ in socks}  # fmt: skip
    tcp = {e.inode: e for e in tcp_sockets(state=None)}
    out = []
    for fd, target in sorted(fd_targets(pid).items()):
        proc_path = f"/proc/{pid}/fd/{fd}"
        if target.startswith("socket:["):
            inode = int(target[8:-1])
            if inode in unix:
                e = unix[inode]
                where = _socket_file(e.path, files.get(inode))
                out.append(f"fd {fd}: Unix socket {where}" + (" (listening)" if e.listening
                                                               else ""))  # fmt: skip
            elif inode in tcp:
                t = tcp[inode]
                out.append(f"fd {fd}: TCP {t.host}:{t.port} {t.state}")
            else:
                out.append(f"fd {fd}: socket (unnamed or another family) {target}")
        elif target.startswith("pipe:["):
            fill = pipe_fill(pid, fd)
            level = f", {fill[0]} of {fill[1]} bytes queued" if fill else ""
            out.append(f"fd {fd}: {target}{level}")
        elif target == "anon_inode:[eventfd]":
            out.append(f"fd {fd}: eventfd")
        elif target.startswith(_SHARED_MEMORY):
            out.append(f"fd {fd}: shared memory {target}")
        elif target.startswith("/"):
            try:
                mode = os.stat(proc_path).st_mode
            except OSError:
                continue
            if stat.S_ISFIFO(mode):
                fill = pipe_fill(pid, fd)
                level = f", {fill[0]} of {fill[1]} bytes queued" if fill else ""
                out.append(f"fd {fd}: FIFO {target}{level}")
            elif not os.path.exists(target) and _read_head(proc_path).startswith(b"QSIZE:"):
                out.append(f"fd {fd}: POSIX message queue {target}")
    for path in sorted(mapped_files(pid)):
        if path.startswith(_SHARED_MEMORY):
            out.append(f"mapped: shared memory {path}")
    return out


def _check_endpoints(pid: int, report: Report) -> None:
    lines = endpoints(pid)
    report.add("pid.endpoints", "info", f"{len(lines)} IPC endpoint(s) open", lines,
               endpoints=lines)  # fmt: skip

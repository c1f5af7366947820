"""``ipcwire doctor`` with no target: this machine's limits, what ipcwire left behind, and
which mechanisms work here.

Leftovers looked for: stale socket files (a socket file in /tmp, $XDG_RUNTIME_DIR or
/run/user/UID, one level deep, that no live socket is bound to: /proc/net/unix lists every
bound path), leaked /dev/shm segments and corrupt ipcwire rings (the shm check), and message
queues whose ipcwire listener died (its ownership lock is no longer held).
"""

from __future__ import annotations

import errno
import fcntl
import os
import resource
import stat
import tempfile
from pathlib import Path
from typing import Final

from ipcwire._procfs import unix_socket_files, unix_socket_table
from ipcwire.doctor._model import Report
from ipcwire.doctor.queues import mq_lock_name, mq_lock_note, msgqueue_limit
from ipcwire.doctor.shm import DEV_SHM, check_shm
from ipcwire.doctor.unix import probe
from ipcwire.registry import mechanisms
from ipcwire.spawn._common import PidsLimit, pids_limit
from ipcwire.unix._namespaces import net_namespace_hint
from ipcwire.unix._socket import MAX_PATH

__all__ = ["check_machine", "socket_dirs", "stale_sockets"]

_F_GETPIPE_SZ: Final = getattr(fcntl, "F_GETPIPE_SZ", 1032)


def socket_dirs() -> list[str]:
    """Where socket files usually live, for this user."""
    dirs = [tempfile.gettempdir(), f"/run/user/{os.getuid()}"]
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        dirs.append(runtime)
    return list(dict.fromkeys(d for d in dirs if os.path.isdir(d)))


def stale_sockets(dirs: list[str]) -> list[str] | None:
    """Socket files in ``dirs`` (and one level below) that no socket is bound to; None when
    this kernel cannot tell (no sock_diag)."""
    found = _unbound_sockets(dirs)
    return None if found is None else found[0]


def _unbound_sockets(dirs: list[str]) -> tuple[list[str], list[str]] | None:
    """Socket files in ``dirs`` (and one level below) that no socket of this network
    namespace is bound to: (stale: a connect() was refused, cannot tell: a connect() was not
    ours to make); None when this kernel cannot tell (no sock_diag)."""
    by_file = unix_socket_files()
    if by_file is None:
        return None
    bound = {e.path for e in unix_socket_table()}
    stale, unknown = [], []
    for base in dirs:
        for top in _entries(base):
            candidates = [top, *(_entries(top) if os.path.isdir(top) else [])]
            for path in candidates:
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if not stat.S_ISSOCK(st.st_mode) or path in bound:
                    continue
                if (st.st_dev, st.st_ino) in by_file:
                    continue
                # sock_diag sees this network namespace only: a server in a container that
                # shares the directory is bound there all the same. Only a refused connect
                # proves the file stale (connect() reaches a path socket across network
                # namespaces); one we may not make (EACCES, EPERM: another user's file, as
                # a live server's is, seen from a sandbox) tells nothing.
                code = probe(path)[0]
                if code == errno.ECONNREFUSED:
                    stale.append(path)
                elif code in _NOT_OURS:
                    unknown.append(path)
    return sorted(stale), sorted(unknown)


_NOT_OURS: Final = frozenset({errno.EACCES, errno.EPERM})


def _entries(directory: str) -> list[str]:
    try:
        return [os.path.join(directory, e) for e in os.listdir(directory)]
    except OSError:
        return []


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _pipe_size() -> int | None:
    r, w = os.pipe()
    try:
        return int(fcntl.fcntl(w, _F_GETPIPE_SZ))
    except OSError:
        return None
    finally:
        os.close(r)
        os.close(w)


def _limits(report: Report) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lines = [
        f"open files (ulimit -n): {soft} (hard {hard})",
        f"pipe buffer: {_pipe_size()} bytes (largest allowed: "
        f"{_read('/proc/sys/fs/pipe-max-size')})",
        f"Unix socket path: at most {MAX_PATH} bytes",
        f"listen backlog ceiling (net.core.somaxconn): {_read('/proc/sys/net/core/somaxconn')}",
        f"socket buffers: rmem_default {_read('/proc/sys/net/core/rmem_default')}, "
        f"wmem_default {_read('/proc/sys/net/core/wmem_default')}",
        f"inotify: {_read('/proc/sys/fs/inotify/max_user_instances')} instances, "
        f"{_read('/proc/sys/fs/inotify/max_user_watches')} watches per user",
    ]
    mq = {n: _read(f"/proc/sys/fs/mqueue/{n}") for n in ("msg_max", "msgsize_max", "queues_max")}
    lines.append("POSIX message queues: " + ", ".join(f"{k} {v}" for k, v in mq.items()))
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)
    cgroup = pids_limit()
    lines.append(f"processes and threads (ulimit -u): {_rlim(nproc[0])} (hard {_rlim(nproc[1])})"
                 + (" (root is exempt)" if os.getuid() == 0 else ""))  # fmt: skip
    lines.append("cgroup pids.max: " + ("none set" if cgroup is None else
                 f"{cgroup.limit} ({cgroup.path}, {cgroup.current} in use)"))  # fmt: skip
    report.add("machine.limits", "info", "this machine's IPC limits", lines, nofile=soft)
    if soft < 1024:
        _nofile(report, soft, hard)
    _pids(report, nproc[0], cgroup)
    msgqueue_limit(report)


def _rlim(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


def _nofile(report: Report, soft: int, hard: int) -> None:
    """A low RLIMIT_NOFILE: the soft limit can be raised up to the hard one by the process
    itself; the hard limit only by root or whoever starts the process."""
    summary = f"only {soft} open files per process: servers with many clients hit EMFILE"
    evidence = [f"RLIMIT_NOFILE {soft} (hard {_rlim(hard)})"]
    if hard == resource.RLIM_INFINITY or hard >= 1024:
        fix = f"raise the soft limit (up to the hard {_rlim(hard)}): ulimit -n {min(hard, 65536)}"
    else:
        fix = (f"the hard limit ({hard}) is the problem: only root, or whoever starts the "
               "program, can raise it: prlimit --nofile=65536:65536 --pid PID, LimitNOFILE=65536 "
               "in its systemd unit, docker run --ulimit nofile=65536:65536, or nofile in "
               "/etc/security/limits.conf (then ulimit -n 65536)")  # fmt: skip
    report.add("machine.nofile", "warning", summary, evidence, fix, nofile=soft, hard=hard)


# Blocking servers (ws, shm, grpc, serve()) start threads per client: a process or cgroup
# limit below this many serves few clients at once.
_FEW_PIDS: Final = 256


def _pids(report: Report, nproc: int, cgroup: PidsLimit | None) -> None:
    """A limit on processes and threads low enough to refuse clients of blocking servers
    (a thread or more each), grpc (a pool of threads), and spawn()."""
    uses = ("blocking ws://, shm:// and serve() start a thread (or more) per client, grpc a "
            "pool of threads, spawn() a process per child: past the limit, clients are "
            "refused (told to try again later) and spawn() fails")  # fmt: skip
    if cgroup is not None and cgroup.limit < _FEW_PIDS:
        left = "" if cgroup.current is None else f", {cgroup.current} in use"
        report.add("machine.pids", "warning", f"this process's cgroup allows only "
                   f"{cgroup.limit} processes and threads in all: {uses}",
                   [f"{cgroup.path}: {cgroup.limit}{left}"], "raise it: docker run "
                   "--pids-limit=4096 (or -1), TasksMax= in a systemd unit, or as root: echo "
                   f"4096 > {cgroup.path}; or serve fewer clients at once "
                   "(serve(max_channels=))", pids_max=cgroup.limit,
                   path=cgroup.path)  # fmt: skip
    if nproc != resource.RLIM_INFINITY and nproc < _FEW_PIDS and os.getuid() != 0:
        report.add("machine.nproc", "warning", f"uid {os.getuid()} may have only {nproc} "
                   f"processes and threads (all its processes together): {uses}",
                   [f"RLIMIT_NPROC {nproc}"], "raise it: ulimit -u 4096 (up to the hard "
                   "limit; above it: LimitNPROC= in a systemd unit, docker run --ulimit "
                   "nproc=4096, or nproc in /etc/security/limits.conf)",
                   nproc=nproc)  # fmt: skip


# The machine report names this many stale socket files; --json has them all.
_SHOWN: Final = 20
_RM_ALL: Final = (
    'ipcwire doctor --json | python3 -c "import json, os, sys; [os.unlink(p) for r in '
    "json.load(sys.stdin)['reports'] for f in r['findings'] if f['check'] == "
    "'machine.stale_sockets' for p in f['data']['paths']]\""
)


def _leftovers(report: Report) -> None:
    found = _unbound_sockets(socket_dirs())
    stale = None if found is None else found[0]
    if found is not None and found[1]:
        unknown = found[1]
        where = net_namespace_hint()
        evidence = [*unknown[:_SHOWN], "connect() -> EACCES or EPERM (not ours to probe), "
                    "and no socket of this network namespace is bound to them"]  # fmt: skip
        if where:
            evidence.append(where)
        report.add("machine.unknown_sockets", "info", f"{len(unknown)} socket file(s) "
                   "cannot be told live or stale: not ours to probe, and they may be bound "
                   "in another network namespace (a container's server, or the host's, seen "
                   "from a sandbox)", evidence, "ask their owners, or run `ipcwire doctor` as "
                   "their owner outside any container", paths=unknown)  # fmt: skip
    if stale is None:
        report.add("machine.stale_sockets", "info", "stale socket files cannot be told "
                   "apart here: the kernel has no sock_diag (unix_diag) to name bound "
                   "sockets")  # fmt: skip
    elif stale:
        shown = stale[:_SHOWN]
        fix = "remove them (rm PATH), or let the next ipcwire listen() at each path do it"
        if len(stale) > _SHOWN:
            shown = [*shown, f"... and {len(stale) - _SHOWN} more"]
            fix += (f"; all {len(stale)} are in `ipcwire doctor --json` (data.paths); to "
                    f"remove them all: {_RM_ALL}")  # fmt: skip
        report.add("machine.stale_sockets", "warning", f"{len(stale)} stale socket file(s): no "
                   "socket is bound to them (their servers died)", shown, fix,
                   paths=stale)  # fmt: skip
    check_shm(None, report=report)
    try:
        names = sorted(os.listdir(DEV_SHM))
    except OSError:
        names = []
    for entry in names:
        path = os.path.join(DEV_SHM, entry)
        queue = mq_lock_name(path)
        if queue is None:
            continue
        owners, note = mq_lock_note(path)
        if not owners:
            evidence = [f"{path}: {note or 'no note'}"]
            if _queue_exists(queue) is False:
                # Only the lock file is left (the queue was removed, as doctor mq:// says
                # to): nothing will ever take it again under this name unless listened on.
                evidence.append(f"mq_open({queue}) -> ENOENT: the queue itself is gone")
                fix = f"rm {path}  (nothing holds it; a listen() on mq://{queue} makes a new one)"
            else:
                fix = f"ipcwire doctor mq://{queue} shows whether its queue was left behind"
            report.add("machine.mq_listener_gone", "warning", f"the ipcwire listener of "
                       f"mq://{queue} is gone (its lock is not held)", evidence, fix,
                       path=path)  # fmt: skip


def _queue_exists(name: str) -> bool | None:
    """Whether the POSIX message queue ``name`` exists; None when it cannot be told."""
    try:
        import posix_ipc

        from ipcwire.mq._queue import kernel_name  # (it needs posix_ipc)
    except ImportError:
        return None
    try:
        posix_ipc.MessageQueue(kernel_name(name), read=True, write=False).close()
    except posix_ipc.ExistentialError:
        return False
    except posix_ipc.Error:
        return None  # there, but not ours to open (or the kernel refuses mq_open)
    return True


def _mechanisms(report: Report) -> None:
    # The same answer as `ipcwire platforms`: the registry's reason (platform, Python
    # package) and then each mechanism's own probe() (session bus, display, kernel).
    lines, missing = [], []
    for spec in mechanisms():
        reason = spec.unavailable_here()
        lines.append(f"{spec.scheme}: " + ("available" if reason is None else f"no: {reason}"))
        if reason is not None:
            missing.append(spec.scheme)
    report.add("machine.mechanisms", "info", f"{len(lines) - len(missing)} of {len(lines)} "
               "mechanisms work here", lines, unavailable=missing)  # fmt: skip


def check_machine() -> Report:
    """The machine-level report."""
    report = Report("this machine")
    _limits(report)
    _leftovers(report)
    _mechanisms(report)
    return report

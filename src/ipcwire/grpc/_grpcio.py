"""grpcio, as every module of this driver imports it: with grpc's fork support off unless the
program chose otherwise (``GRPC_ENABLE_FORK_SUPPORT``, read once, when grpc is first
imported).

With it on (grpcio's default here), a process forked while an RPC was in flight (an open
``grpc:`` channel, whose reader waits inside grpc) printed "Other threads are currently
calling into gRPC, skipping fork() handlers" and the child sometimes died in grpc's own fork
handling (SIGSEGV or SIGABRT, about one fork in ten here) even when it never used grpc: a
``multiprocessing`` worker, a prefork server. grpc's fork support exists for children that
use grpc after fork with no RPC in flight (grpc's doc/fork_support.md); a program that needs
it sets ``GRPC_ENABLE_FORK_SUPPORT=true`` itself before ipcwire loads this driver, or imports
grpc first. Either way ipcwire's objects in a child never call into grpc (their ``close()``
there only marks them closed).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys

if "grpc" not in sys.modules:
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc

from ipcwire._oserror import translate
from ipcwire.errors import ResourceExhausted

__all__ = ["ensure_descriptors", "ensure_threads", "grpc", "threads_needed"]

# gRPC's core creates descriptors of its own (an epoll set, eventfds) when it starts, and
# again after it shut down because no channel or server was left; one it cannot create is a
# failed check that aborts the whole process (SIGABRT, "epoll_create1 unavailable", "Check
# failed: init_epoll1_linux()"). Measured: a connect with 0 to 3 descriptors free aborted,
# with 4 it failed cleanly, with 5 it worked.
_ROOM = 8


def ensure_descriptors(url: str) -> None:
    """Refuse (ResourceExhausted) to call into gRPC with fewer than ``_ROOM`` descriptors
    free, since gRPC would abort the process instead of failing.

    Raises:
        ResourceExhausted: naming the limit and the fix.
    """
    fds: list[int] = []
    try:
        for _ in range(_ROOM):
            fds.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    except OSError as exc:
        if exc.errno not in (errno.EMFILE, errno.ENFILE):
            return  # no /dev/null (a bare chroot, say): nothing learnt, gRPC will tell
        err = translate(exc, url, "starting gRPC for")
        raise ResourceExhausted(
            f"{err} (gRPC needs about {_ROOM} free to start, and would abort the whole process "
            f"without them)",
            endpoint=url,
        ) from exc
    finally:
        for fd in fds:
            os.close(fd)


# gRPC's core starts threads of its own when it starts (and again after it shut down because
# no channel or server was left): its event engine's pool, one per CPU from 4 to 16, its
# "lifeguard" and a timer thread. One it cannot start is retried for about 10 s, then aborts
# the whole process (SIGABRT, "Failed to start lifeguard thread", grpcio 1.85). Measured on 2
# CPUs in a pids cgroup (threads the process may start beyond those it has): with 4 or 5,
# listen() and connect(), blocking and asyncio, aborted; with 6, a blocking listen() or
# connect() hung; with 7, connect() raised RuntimeError (a thread of ipcwire's or grpcio's
# Python side); with 8, all worked. So: the core's 4 + 1 + 1, and 2 more.
_CORE_THREADS = ("event_engine", "lifeguard", "grpc_global_tim")


def threads_needed() -> int:
    """How many threads starting gRPC's core takes here, with room for the first channel's."""
    cpus = os.cpu_count() or 1
    with contextlib.suppress(AttributeError, OSError):
        cpus = max(cpus, len(os.sched_getaffinity(0)))
    return min(max(cpus, 4), 16) + 2 + 2


def _core_running() -> bool:
    """Whether gRPC's core threads run in this process (then starting it costs nothing)."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return True  # not Linux's /proc: nothing to learn
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().strip() in _CORE_THREADS:
                    return True
        except OSError:
            continue
    return False


def _all_threads() -> int:
    """How many threads the machine runs (/proc/loadavg), or a number beyond any limit."""
    try:
        with open("/proc/loadavg") as f:
            return int(f.read().split()[3].partition("/")[2])
    except (OSError, ValueError, IndexError):
        return 1 << 62


def _user_threads(uid: int) -> int | None:
    """How many threads processes of real uid ``uid`` run (what RLIMIT_NPROC counts)."""
    total = 0
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                text = f.read()
        except OSError:
            continue
        owner = threads = None
        for line in text.splitlines():
            if line.startswith("Uid:"):
                owner = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
        if owner == uid and threads is not None:
            total += threads
    return total


def ensure_threads(url: str) -> None:
    """Refuse (ResourceExhausted) to start gRPC's core with less room for threads than it
    takes (:func:`threads_needed`) under the cgroup's ``pids.max`` or ``ulimit -u``, since
    gRPC would abort the whole process instead of failing. Nothing is checked while its
    core runs already.

    Raises:
        ResourceExhausted: naming the endpoint, the limit and the fix.
    """
    from ipcwire.spawn._common import pids_limit, process_limits

    need = threads_needed()
    room: int | None = None
    cg = pids_limit()
    if cg is not None and cg.current is not None:
        room = cg.limit - cg.current
    if os.geteuid() != 0:  # (RLIMIT_NPROC does not bind root)
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NPROC)[0]
        # (the user's threads are counted only when the machine's all could reach the limit)
        if soft != resource.RLIM_INFINITY and soft - _all_threads() < need:
            used = _user_threads(os.getuid())
            if used is not None:
                room = soft - used if room is None else min(room, soft - used)
    if room is None or room >= need or _core_running():
        return
    raise ResourceExhausted(
        f"cannot start gRPC for {url}: it starts about {need} threads (its event engine, "
        f"one per CPU from 4 to 16, and more), and this process can start only "
        f"{max(room, 0)} more: {process_limits()}. gRPC would abort the whole process "
        f"(SIGABRT) without them; raise the limit (docker run --pids-limit, systemd "
        f"TasksMax=, ulimit -u), or end some threads or processes first",
        endpoint=url,
    )

"""The child's side: take the protocol off fds 0 and 1, and notice the parent's death.

:func:`claim_stdio` duplicates stdin and stdout to new close-on-exec fds for the channel, then
points fd 0 at ``/dev/null`` and fd 1 at stderr. From then on a stray ``print()``, a library
that logs to stdout, or a sub-subprocess that inherits fds 0/1 writes to stderr and reads
nothing: none of them can corrupt or steal the protocol stream.

:func:`watch_parent` runs an action when the parent process dies (a pidfd on Linux, so it is
immediate; elsewhere ``getppid()`` is polled). The parent is the one ``spawn()`` named in
``IPCWIRE_PARENT_PID``, so a parent that died before the watch started is noticed too. It may
be a grandparent: a launcher between them (``uv run``, a shell script without ``exec``) starts
this process as its own child, and the watch is then on the process that called ``spawn()``,
as long as /proc shows it among this process's ancestors. The variable is for the process
whose stdin is the pipe ``spawn()`` made (``IPCWIRE_PARENT_PIPE`` names it; a launcher passes
its stdin on): a process that the spawned one starts with pipes of its own inherits the
environment but watches its own parent. :func:`claim_stdio` also removes the variables from
``os.environ``, so the children of the process that reads them do not inherit them.

A process in a pid namespace of its own (``unshare --pid --fork``, bubblewrap) cannot see the
spawner by its pid: ``IPCWIRE_PARENT_PIDNS`` says the spawner's namespace is another one (or,
from a spawner that does not say, ``getppid()`` is 0). Such a parent is not dead: the watch is
then on what crosses the namespace, the stdout pipe, whose read end only the spawner holds
(poll reports POLLERR on our end once the spawner is gone). As the init of its namespace
(pid 1) a process does not get a signal it has no handler for, so the default action exits
with ``os._exit(143)`` there when SIGTERM has no handler.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import Final

from ipcwire._procfs import proc_stat
from ipcwire.errors import ChannelBroken, LocalProtocolError
from ipcwire.pipe._fdutil import is_pipe_like
from ipcwire.spawn._common import (
    PARENT_ENV,
    PARENT_PIDNS_ENV,
    PARENT_PIPE_ENV,
    pid_namespace,
    pipe_id,
)
from ipcwire.spawn._process import wait_readable

__all__ = ["claim_stdio", "watch_parent"]

_POLL_PARENT: Final = 0.25  # seconds, where there is no pidfd
_MAX_DEPTH: Final = 64  # ancestors looked at for the spawn()ing process
_claimed = False
_claim_lock = threading.Lock()
_spawner: int | None = None  # the process that spawn()ed this one, if it meant this one
_own_group = False  # this process is in the process group spawn() made for it
_elsewhere = False  # the parent is in another (ancestor) pid namespace: not visible by pid


def claim_stdio(*, redirect: bool = True) -> tuple[int, int, dict[int, int], bool]:
    """Take stdin/stdout for the protocol. Returns ``(read_fd, write_fd, restore, nonblocking)``:
    the channel's fds, their original status flags, and whether O_NONBLOCK may be set (only
    for pipes and sockets: a terminal shared with the shell must stay blocking).

    Raises:
        LocalProtocolError: called twice in one process.
        ChannelBroken: fd 0 or 1 is closed.
    """
    global _claimed, _spawner, _own_group, _elsewhere
    with _claim_lock:
        if _claimed:
            raise LocalProtocolError(
                "stdio() was already called in this process; keep the channel it returned "
                "(fds 0 and 1 no longer carry the protocol)"
            )
        rfd = -1
        try:
            rfd = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
            wfd = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
        except OSError as exc:
            if rfd >= 0:
                os.close(rfd)
            raise ChannelBroken(
                "stdio(): this process has no stdin or stdout (fd 0 or 1 is closed); start it "
                "with ipcwire.spawn(), or with pipes on both",
                endpoint="stdio:",
            ) from exc
        _claimed = True
        _spawner, _elsewhere = _meant_for(rfd)
        if _elsewhere:
            # spawn() made the group for the process it started, outside this namespace: the
            # group's leader is not visible here (getpgrp() is 0)
            _own_group = _spawner is not None and os.getpgrp() == 0
        else:
            _own_group = _spawner is not None and _in_a_group_of_its_own(_spawner)
    if redirect:
        with contextlib.suppress(AttributeError, ValueError, OSError):
            sys.stdout.flush()  # what is buffered still belongs to the protocol's past
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        try:
            os.dup2(2, 1)
        except OSError:  # no stderr: stray output is dropped
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.close(null)
    nonblocking = is_pipe_like(rfd) and is_pipe_like(wfd)
    restore = {fd: fcntl.fcntl(fd, fcntl.F_GETFL) for fd in (rfd, wfd)} if nonblocking else {}
    return rfd, wfd, restore, nonblocking


def _meant_for(fd: int) -> tuple[int | None, bool]:
    """The pid ``spawn()`` named in the environment if this process's stdin (``fd``) is the
    pipe it made (a parent of an older ipcwire names no pipe: trusted), and whether the
    parent to watch is in another pid namespace than this process (so not visible by its
    pid). The variables are removed from ``os.environ`` either way."""
    pid = os.environ.pop(PARENT_ENV, "")
    pipe = os.environ.pop(PARENT_PIPE_ENV, None)
    pidns = os.environ.pop(PARENT_PIDNS_ENV, None)
    spawner: int | None
    try:
        if pipe is not None and pipe != pipe_id(fd):
            spawner = None  # inherited from a process that spawn() started: not ours
        else:
            spawner = int(pid) if int(pid) > 0 else None
    except (OSError, ValueError):
        spawner = None
    ours = pid_namespace()
    if spawner is not None and pidns and ours:
        return spawner, pidns != ours
    return spawner, os.getppid() == 0  # 0: the parent is outside this pid namespace


def _descends_from(pid: int) -> bool:
    """True if ``pid`` is this process's parent or, through /proc, one of its ancestors (a
    launcher such as ``uv run`` may stand between ``spawn()`` and this process). Without
    /proc, only the parent counts. A process that dies is no longer an ancestor: its children
    go to init or a subreaper."""
    ancestor = os.getppid()
    for _ in range(_MAX_DEPTH):
        if ancestor == pid:
            return True
        if ancestor <= 1:  # init, or a parent outside our pid namespace (0)
            return False
        st = proc_stat(ancestor)
        if st is None:  # gone, or no /proc
            return False
        ancestor = st.ppid
    return False


def _in_a_group_of_its_own(spawner: int) -> bool:
    """Whether this process is in another process group than ``spawner``'s: the one spawn()
    made for the child it started (this process, or a launcher between them)."""
    try:
        return os.getpgid(spawner) != os.getpgrp()
    except OSError:  # the spawner is gone already
        return False


def _default_action() -> None:
    # SIGTERM: the default disposition exits, and graceful_shutdown() (if installed) runs its
    # cleanup first. In the process group spawn() made, the whole group gets it, as from the
    # dead parent's shutdown ladder: what this child started (its own subprocesses) must not
    # outlive it, reparented to init.
    if _own_group:
        os.killpg(os.getpgrp(), signal.SIGTERM)  # (0 across a pid namespace: our own group)
    else:
        os.kill(os.getpid(), signal.SIGTERM)
    if os.getpid() == 1 and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        # the init of a pid namespace: the kernel drops a signal it has no handler for, so
        # exit as the default disposition would have (everything else in it is killed then)
        os._exit(128 + signal.SIGTERM)


def watch_parent(
    action: Callable[[], object] | None = None, *, pipe: int | None = None
) -> threading.Thread | None:
    """Run ``action`` (default: SIGTERM this process) once the parent process has died.
    ``pipe`` is the channel's write end (the spawner's stdout pipe), watched instead when the
    parent is in another pid namespace.

    Returns the watching thread, or None when the parent was already gone (the action ran),
    or when it is in another pid namespace and there is no pipe to it to watch (a warning).
    """
    act = action or _default_action
    if _elsewhere:
        return _watch_pipe(pipe, act)
    expected = _spawner or os.getppid()
    if not _descends_from(expected):
        act()
        return None
    fd = None
    opener = getattr(os, "pidfd_open", None)
    if opener is not None:
        try:
            fd = opener(expected)
        except OSError:
            fd = None
        # Died between the check and the open (its pid may be another process's now: a new
        # process is never an ancestor, so the pidfd is the parent's if this still holds).
        if not _descends_from(expected):
            if fd is not None:
                os.close(fd)
            act()
            return None

    def run() -> None:
        if fd is not None:
            wait_readable(fd, None)
            os.close(fd)
        else:  # pragma: no cover - no pidfd
            while _descends_from(expected):
                time.sleep(_POLL_PARENT)
        act()

    t = threading.Thread(target=run, name="ipcwire parent watch", daemon=True)
    t.start()
    return t


def _watch_pipe(pipe: int | None, act: Callable[[], object]) -> threading.Thread | None:
    """Run ``act`` once nobody reads ``pipe`` any more: the parent, in another pid namespace,
    is gone (it alone holds the read end). A copy of the fd is watched, so the channel may be
    closed meanwhile."""
    if pipe is None or not is_pipe_like(pipe):
        warnings.warn(
            "stdio(exit_on_parent_death=True): the parent is in another pid namespace, where "
            "its pid cannot be watched, and stdout is not a pipe or socket to it: nothing "
            "tells this process when the parent dies; start it with ipcwire.spawn()",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    fd = fcntl.fcntl(pipe, fcntl.F_DUPFD_CLOEXEC, 3)

    def run() -> None:
        poller = select.poll()
        poller.register(fd, 0)  # only POLLERR / POLLHUP: the other end is closed
        while not poller.poll():
            pass
        os.close(fd)
        act()

    t = threading.Thread(target=run, name="ipcwire parent watch", daemon=True)
    t.start()
    return t

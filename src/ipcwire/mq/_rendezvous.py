"""An mq listener's rendezvous queue: created under an ownership lock (or adopted from a
listener that crashed, after probing that nobody holds the lock), released on close and at
exit; ``listen``'s options are read here. ``ipcwire.doctor`` finds a listener's ownership lock
with :func:`lock_path` and :func:`lock_held` from here. The clients a listener is handshaking
with are ``_session.py``'s.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
from typing import Any

import posix_ipc

from ipcwire._atexit import AtExit
from ipcwire._core.url import Endpoint
from ipcwire._stream.listener import listening_here
from ipcwire.errors import (
    AddressInUse,
    IpcwireError,
    PermissionDenied,
    ResourceExhausted,
    Timeout,
)
from ipcwire.mq import limits
from ipcwire.mq._ends import (
    remove_end_pipe,
    shared_dir,
)
from ipcwire.mq._proto import (
    RENDEZVOUS_MSGSIZE,
    Hello,
)
from ipcwire.mq._queue import MessageQueue, queue_name, unlink_queue
from ipcwire.mq._session import (
    int_option,
    unlink_clients,
    valid_pair,
)
from ipcwire.options import ChannelOptions, reject_unknown
from ipcwire.spool._flock import FileLock, lock_holders

__all__ = [
    "LISTEN_OPTIONS",
    "PROBE_GRACE",
    "bind_listener",
    "bind_rendezvous",
    "lock_held",
    "lock_note",
    "lock_path",
    "release_rendezvous",
    "unlink_at_exit",
]

log = logging.getLogger("ipcwire")

LISTEN_OPTIONS = ("mode", "backlog", "unlink")
# How long a listener waits for a lock file that is busy before it says AddressInUse: a
# client's probe of it (lock_held) holds it for an instant.
PROBE_GRACE = 0.05


def lock_held(name: str) -> bool | None:
    """Whether a listener holds the ownership lock of queue ``name``: True or False, or None
    when this cannot be told (no lock file: no ipcwire listener made one here, or one closed
    and removed it; or it cannot be opened). The kernel's list of locks (/proc/locks) is read
    first; it does not show holders in a pid namespace this one cannot see, so then a shared
    lock is tried for an instant (a listener starting meanwhile waits that instant out:
    :data:`PROBE_GRACE`)."""
    path = lock_path(name)
    if lock_holders(path):
        return True
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    else:
        # A free lock on a file no longer at the path (its listener removed it while a new
        # one made the next) tells nothing about the new one.
        try:
            mine, there = os.fstat(fd), os.stat(path, follow_symlinks=False)
        except OSError:
            return None
        return None if (mine.st_dev, mine.st_ino) != (there.st_dev, there.st_ino) else False
    finally:
        os.close(fd)  # (a shared lock taken is released with it)


def lock_note(name: str) -> dict[str, object]:
    """The note the last listener of queue ``name`` wrote into its lock file (pid, command,
    since); empty when none (a listener that closed cleanly clears it)."""
    try:
        with open(lock_path(name), "rb", opener=_nofollow) as f:
            note = json.loads(f.read(4096) or b"{}")
    except (OSError, ValueError):
        return {}
    return note if isinstance(note, dict) else {}


def _nofollow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)


def lock_path(name: str) -> str:
    """Where a listener's ownership lock for queue ``name`` lives (queue names are global
    across users, so this is a shared directory: /dev/shm, or the temp dir)."""
    # FileLock opens with O_NOFOLLOW.
    return os.path.join(shared_dir(), f"ipcwire-mq.{name[1:]}.lock")


def bind_rendezvous(
    name: str, url: str, *, mode: int, backlog: int
) -> tuple[MessageQueue, FileLock]:
    """Create (or adopt) the listener's rendezvous queue, holding its ownership lock.

    A live listener holds the lock: AddressInUse names it. A queue left by an ipcwire
    listener that crashed (or closed with ``unlink=False``) is adopted, and announcements
    still in it are served or cleaned up. A queue ipcwire did not create is left alone.

    Raises:
        AddressInUse: a live listener owns the name, or a foreign queue has it.
        ConfigurationError, ResourceExhausted, PermissionDenied: creating the queue.
        ResourceExhausted: no room for the lock file (a full /dev/shm), naming the fix.
    """
    path = lock_path(name)
    lock = FileLock(path, mode=0o644, own=True)
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            # held: by a listener, or for an instant by a connecting client asking whether
            # a listener holds it (lock_held), which this waits out
            lock.acquire(timeout=PROBE_GRACE)
    except PermissionDenied as exc:
        raise PermissionDenied(
            f"cannot listen at {url}: {exc} Pick another name, or have that user or root "
            f"remove it (and the queue {name}, if there is one)",
            endpoint=url,
        ) from exc
    except ResourceExhausted as exc:
        raise _no_room(exc, url, path) from exc
    except Timeout:
        holder = lock.holder()
        who = holder.describe() if holder else "another process"
        stop = f"kill {holder.pid}" if holder and holder.pid else "see ipcwire doctor " + url
        raise listening_here(url, holder.pid if holder else None) or AddressInUse(
            f"cannot listen at {url}: it is in use: a listener in {who} owns the queue "
            f"{name} (it holds the lock {path}). Stop that listener ({stop}), or choose "
            f"another name (`ipcwire doctor {url}` shows more)",
            pid=holder.pid if holder else None,
            endpoint=url,
        ) from None
    # A lock file that was there already was made by an ipcwire listener (this one's is
    # removed only after its queue): told by the acquire itself, not by a look before it,
    # which a listener starting or closing meanwhile would make stale.
    known = not lock.created
    try:
        size = min(RENDEZVOUS_MSGSIZE, limits().msgsize_ceiling)
        try:
            q = MessageQueue.create(name, maxmsg=backlog, msgsize=size, mode=mode, url=url)
        except AddressInUse:
            if not known:
                raise AddressInUse(
                    f"{url}: a queue {name} exists that no ipcwire listener created; pick "
                    f'another name, or remove it (python -c "import posix_ipc; '
                    f"posix_ipc.unlink_message_queue('{name}')\")",
                    endpoint=url,
                ) from None
            q = MessageQueue.open(name, url=url)
            try:
                _check_adopted(q, name, url, mode)
            except BaseException:
                q.close()
                raise
            q.owner = True
            log.info("%s adopted the queue %s left by an earlier listener", url, name)
    except BaseException:
        if not known:
            _remove(path)
        lock.release()
        raise
    return q, lock


def _no_room(exc: ResourceExhausted, url: str, path: str) -> ResourceExhausted:
    """The error for a lock file ``path`` that could not be made for the listener at ``url``
    (``exc``): a full file system is named with a fix that applies (the directory is not
    the user's to choose); anything else keeps its message, naming the URL."""
    cause = exc.__cause__
    where = os.path.dirname(path)
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceExhausted(
            f"cannot listen at {url}: no room for its lock file {path} ({cause.strerror}): "
            f"{where} has no free space or no free inodes (df -h {where}, df -i {where}), or "
            f"its owner is over a disk quota. mq keeps its listeners' lock files and its "
            f"channels' end pipes there, beside other programs' POSIX shared memory: remove "
            f"what is stale there, or give {where} more room (mount -o remount,size=...,"
            f"nr_inodes=... {where}; in a container, docker run --shm-size=... or a larger "
            f"tmpfs on {where})",
            endpoint=url,
        )
    return ResourceExhausted(f"cannot listen at {url}: {exc}", endpoint=url)


def _check_adopted(q: MessageQueue, name: str, url: str, mode: int) -> None:
    """A queue left by an earlier listener is adopted only if it is this user's and no more
    open than ``mode``: queue names are global, and another user may have made it first
    (to read the announcements, or serve this listener's clients itself).

    Raises:
        PermissionDenied: another owner, or a wider mode; names both and the fix.
    """
    st = os.fstat(q.fileno())
    uid, have = os.geteuid(), st.st_mode & 0o777
    if st.st_uid != uid:
        raise PermissionDenied(
            f"cannot listen at {url}: the queue {name} exists and is owned by uid "
            f"{st.st_uid} (mode {have:#o}); you are uid {uid}, and a listener never adopts "
            f"another user's queue. Pick another name, or have that user or root remove it: "
            f'python -c "import posix_ipc; posix_ipc.unlink_message_queue({name!r})"',
            endpoint=url,
        )
    if have & ~mode:
        raise PermissionDenied(
            f"cannot listen at {url}: the queue {name} left by an earlier listener is mode "
            f"{have:#o}, which lets more users in than mode={mode:#o}; remove it (python -c "
            f'"import posix_ipc; posix_ipc.unlink_message_queue({name!r})") or listen with '
            f"mode={have:#o} if that is meant",
            endpoint=url,
        )


def bind_listener(
    endpoint: Endpoint, kw: dict[str, Any], *, mode: int, backlog: int | None
) -> tuple[MessageQueue, FileLock]:
    """``listen``'s options checked, then :func:`bind_rendezvous`; ``backlog`` may come from
    the URL's query and defaults to the kernel's ``msg_default``.

    Raises:
        ConfigurationError: an unknown keyword, or a backlog that is not an integer.
        InvalidURL: not a usable queue name.
        And those of :func:`bind_rendezvous`.
    """
    reject_unknown(kw, endpoint, LISTEN_OPTIONS)
    name = queue_name(endpoint)
    n = int_option(endpoint, "backlog", backlog) or limits().msg_default
    return bind_rendezvous(name, endpoint.url, mode=mode, backlog=n)


# The names of listeners' queues (and lock files) to remove at interpreter exit if the
# listener is never closed (ipcwire._atexit), by the listener's lock.
_at_exit: dict[int, AtExit] = {}


def unlink_at_exit(q: MessageQueue, lock: FileLock) -> None:
    """Have the queue's name and its lock file removed at interpreter exit unless
    :func:`release_rendezvous` runs first: a program that never closed its listener would
    leave the queue, which counts against the user's queue limit until reboot."""
    name, path = q.name, lock.path

    def remove() -> None:
        if lock.owner == os.getpid():  # (not in a forked child: they are its parent's)
            with contextlib.suppress(posix_ipc.Error):
                unlink_queue(name)
            _remove(path)

    _at_exit[id(lock)] = AtExit(remove)


def release_rendezvous(
    q: MessageQueue, lock: FileLock, base: str, options: ChannelOptions, *, unlink: bool
) -> None:
    """Close the listener's queue: clean up announcements nobody will accept, unlink the
    queue (unless ``unlink`` is False), release and remove the lock. A forked child closing
    its copy of the listener only closes its descriptors: the queue is its parent's."""
    at_exit = _at_exit.pop(id(lock), None)
    if at_exit is not None:
        at_exit.cancel()
    if unlink and lock.owner == os.getpid():
        while (got := _try_recv(q)) is not None:
            try:
                hello = Hello.decode(got, options.url)
            except IpcwireError:
                continue
            if valid_pair(hello, base):
                unlink_clients(hello.up)
                unlink_clients(hello.dn)
                remove_end_pipe(hello.up)
        q.unlink()
        _remove(lock.path)
    q.close()
    lock.release()


def _try_recv(q: MessageQueue) -> bytes | None:
    try:
        got = q.try_recv()
    except IpcwireError:
        return None
    return None if got is None else got[0]


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass

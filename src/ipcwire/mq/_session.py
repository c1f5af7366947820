"""Opening an mq channel, the listener's side, with non-blocking steps only.

The listener's rendezvous queue (created, or adopted from a listener that crashed, under an
ownership lock; released) and the clients it is still handshaking with (:class:`ServerSession`,
:func:`announced`); ``listen``'s options are read here too. The blocking and asyncio drivers
wait (poll or the event loop) and call these steps; the steps never wait. The connecting side
is ``_client.py``; the few steps both sides share (integer options, the new channel's wire
format, the peer's pidfd) are here, and ``_client.py`` uses them. ``ipcwire.doctor`` finds a
listener's ownership lock with :func:`lock_path` from here. See ``_proto.py`` for the messages.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import posix_ipc

from ipcwire._atexit import AtExit
from ipcwire._core.handshake import ClientHandshake, ServerHandshake
from ipcwire._core.url import Endpoint
from ipcwire._core.wire import WireFormat
from ipcwire._oserror import ACCEPT_RETRY
from ipcwire._stream.listener import listening_here
from ipcwire.errors import (
    AddressInUse,
    ConfigurationError,
    InvalidURL,
    IpcwireError,
    PermissionDenied,
    RemoteProtocolError,
    ResourceExhausted,
    Timeout,
)
from ipcwire.mq import limits
from ipcwire.mq._ends import (
    make_life_pipe,
    open_end_pipe,
    remove_end_pipe,
    remove_life_pipe,
    shared_dir,
)
from ipcwire.mq._proto import (
    HANDSHAKE_PRIORITY,
    RENDEZVOUS_MSGSIZE,
    Hello,
    decode_json,
    encode_json,
    strip_frame,
)
from ipcwire.mq._queue import MessageQueue, check_name, queue_name, unlink_queue
from ipcwire.options import ChannelOptions, reject_unknown
from ipcwire.spool._flock import FileLock, lock_holders

__all__ = [
    "Deferred",
    "ServerSession",
    "announced",
    "bind_listener",
    "bind_rendezvous",
    "channel_wire",
    "close_fd",
    "elsewhere",
    "int_option",
    "lock_held",
    "lock_note",
    "open_pidfd",
    "pickle_over_shared_queues",
    "pid_namespace",
    "release_rendezvous",
    "server_accept",
]

log = logging.getLogger("ipcwire")

LISTEN_OPTIONS = ("mode", "backlog", "unlink")
# How long a listener waits for a lock file that is busy before it says AddressInUse: a
# client's probe of it (lock_held) holds it for an instant.
PROBE_GRACE = 0.05


# -- steps both sides take --------------------------------------------------------------------


def int_option(endpoint: Endpoint, name: str, value: int | None) -> int | None:
    """An integer option from a keyword argument, else from the URL's query.

    Raises:
        ConfigurationError: not an integer.
    """
    raw: object = value if value is not None else endpoint.params.get(name)
    if raw is None:
        return None
    try:
        return int(raw)  # type: ignore[call-overload,no-any-return]
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name}={raw!r} for {endpoint}: must be an integer") from None


def channel_wire(options: ChannelOptions, hs: ClientHandshake | ServerHandshake) -> WireFormat:
    """A new channel's wire format: its sends are limited by the peer's ``max_frame``."""
    wire = options.wire()
    wire.send_limit = hs.peer_max_frame
    return wire


def open_pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits; None where unsupported.

    Raises:
        ProcessLookupError: the process is already gone.
    """
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None or pid == os.getpid():
        return None
    try:
        fd: int = pidfd_open(pid)
    except ProcessLookupError:
        raise
    except OSError:
        return None
    return fd


def pid_namespace() -> str | None:
    """This process's pid namespace (``pid:[inode]``), sent to the peer so it can tell
    whether this side's pid means anything there (``_proto.py``); None without /proc."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def elsewhere(peer_pidns: object) -> bool:
    """True when the peer said it is in another pid namespace than this process."""
    own = pid_namespace()
    return isinstance(peer_pidns, str) and own is not None and peer_pidns != own


def close_fd(fd: int | None) -> None:
    """Close an fd if there is one, ignoring errors."""
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


# -- the listener's side ----------------------------------------------------------------------


@dataclass(eq=False)
class ServerSession:
    """A client the listener is still handshaking with."""

    up: MessageQueue
    dn: MessageQueue
    hs: ServerHandshake
    pid: int  # as the client sees itself (for the log)
    pidfd: int | None  # the client's pidfd, or the life pipe's read end (see ``life``)
    deadline: float
    ends: int | None = field(default=None)  # the end pipe, when the client made one
    fails: bool = field(default=False)  # the client tells and takes a failed end (_proto.py)
    done: bool = field(default=False)
    # the client is in another pid namespace: its pid means nothing here (peer.pid is None),
    # and ``pidfd`` is the life pipe (_proto.py), whose name the channel removes when done
    life: bool = field(default=False)

    @property
    def peer_pid(self) -> int | None:
        """The client's pid in this process's pid namespace, None where not known."""
        return None if self.life else self.pid

    def feed(self, data: bytes, priority: int) -> bool:
        """Handle one message from ``up``; True when open. Failures raise (and reply first).

        Raises:
            IpcwireError: the client failed the handshake.
        """
        if priority != HANDSHAKE_PRIORITY:
            raise RemoteProtocolError("the client sent data before finishing the handshake")
        return self._step(data)

    def _step(self, data: bytes) -> bool:
        step = self.hs.receive(data)
        if step.send:
            reply = decode_json(strip_frame(step.send), "this listener", "")
            reply["pid"] = os.getpid()
            pidns = pid_namespace()
            if pidns is not None:
                reply["pidns"] = pidns
            if self.life and self.pidfd is not None:
                reply["life"] = True  # the client opens the life pipe's write end
            if self.ends is not None:
                reply["ends"] = True  # the client keeps its end pipe
            if self.fails:
                reply["fails"] = True  # both ends tell a failed end from a clean one
            self.dn.try_send(encode_json(reply), HANDSHAKE_PRIORITY)
        if step.error is not None:
            raise step.error
        self.done = step.done
        return step.done

    def refuse(self, error: IpcwireError) -> None:
        """Refuse the client before its handshake, telling it why (it raises ``error``'s
        type with the text).

        Raises:
            IpcwireError: ``error``.
        """
        step = self.hs.reject(error, "permission")
        if step.send:
            self.dn.try_send(strip_frame(step.send), HANDSHAKE_PRIORITY)
        raise error

    def advance(self, url: str) -> bool | None:
        """Read the client's next handshake message if one is there: True when the channel is
        open, False when not yet, None when the client failed the handshake (logged; drop
        it)."""
        try:
            got = self.up.try_recv()
            return False if got is None else self.feed(*got)
        except IpcwireError as exc:
            log.warning("%s refused client pid %d: %s", url, self.pid, exc)
            return None

    def close(self) -> None:
        """Drop this client."""
        self.up.close()
        self.dn.close()
        close_fd(self.pidfd)
        self.pidfd = None
        close_fd(self.ends)
        self.ends = None
        if self.life:
            remove_life_pipe(self.up.name)


def _unlink_clients(name: str) -> None:
    """Remove a client's queue name. Another user's (a shared group, mode=0o660) may only be
    removed by its owner (/dev/mqueue is sticky): that is left to the client."""
    try:
        unlink_queue(name)
    except posix_ipc.PermissionsError:
        log.info("%s belongs to another user; its owner removes it", name)


def _valid_pair(hello: Hello, base: str) -> bool:
    """Only queues named like a pair for this listener may be opened and unlinked."""
    if not hello.up.endswith(".up") or hello.dn != hello.up[:-3] + ".dn":
        return False
    try:
        check_name(hello.up, "")
        check_name(hello.dn, "")
    except InvalidURL:  # a NUL, too long: no queue of ours
        return False
    tag = hello.up[:-3]
    return tag.startswith((base + ".", "/ipcwire.")) and "/" not in tag[1:]


def _not_ours(url: str, pid: int, exc: IpcwireError) -> None:
    """The client's queues may not be opened by this listener's user (the client is alive:
    "is gone" was logged here before)."""
    log.warning(
        "%s cannot open the queues of client pid %d (%s): it runs as another user "
        "and its queues are not open to this one; both sides need mode=0o660 and a group "
        "they share",
        url,
        pid,
        exc,
    )


def server_accept(
    data: bytes, base: str, options: ChannelOptions, timeout: float
) -> ServerSession | None:
    """Handle one announcement from the rendezvous queue: open the client's pair, unlink
    its names, start the handshake. None when the client is dropped (logged).

    Raises:
        ResourceExhausted: this process is out of descriptors; nothing was changed, so the
            same announcement can be handled again later.
    """
    url = options.url
    try:
        hello = Hello.decode(data, url)
    except IpcwireError as exc:
        log.warning("%s dropped an announcement: %s", url, exc)
        return None
    if not _valid_pair(hello, base):
        log.warning("%s ignored an announcement of foreign queues %s", url, hello.up)
        return None
    try:
        up = MessageQueue.open(hello.up, write=False, url=url)
    except ResourceExhausted:
        raise  # this side's shortage: the client's queues stay, for a later try
    except PermissionDenied as exc:
        _not_ours(url, hello.pid, exc)
        return None
    except IpcwireError as exc:
        log.info("%s: client pid %d is gone (%s)", url, hello.pid, exc)
        _unlink_clients(hello.dn)
        remove_end_pipe(hello.up)
        return None
    try:
        dn = MessageQueue.open(hello.dn, read=False, url=url)
    except ResourceExhausted:
        up.close()
        raise
    except PermissionDenied as exc:
        up.close()
        _not_ours(url, hello.pid, exc)
        return None
    except IpcwireError as exc:
        log.info("%s: client pid %d is gone (%s)", url, hello.pid, exc)
        _unlink_clients(up.name)
        remove_end_pipe(up.name)
        up.close()
        return None
    try:
        ends = open_end_pipe(up.name, os.fstat(up.fileno()).st_uid, url)
    except ResourceExhausted:
        up.close()
        dn.close()
        raise
    # a client in another pid namespace: its pid means nothing here (another process's, or
    # none); the life pipe tells its exit instead (_proto.py)
    life = elsewhere(hello.pidns)
    life_fd = None
    if life:
        try:
            life_fd = make_life_pipe(up.name, os.fstat(up.fileno()).st_mode & 0o777, url)
        except ResourceExhausted:
            up.close()
            dn.close()
            close_fd(ends)
            raise
    # the client removes them too, once open: here for a client that died meanwhile
    _unlink_clients(up.name)
    _unlink_clients(dn.name)
    remove_end_pipe(up.name)
    try:
        pidfd = life_fd if life else open_pidfd(hello.pid)
    except ProcessLookupError:
        log.info("%s: client pid %d exited before it was accepted", url, hello.pid)
        up.close()
        dn.close()
        close_fd(ends)
        return None
    session = ServerSession(
        up,
        dn,
        options.server_handshake("length"),
        hello.pid,
        pidfd,
        time.monotonic() + timeout,
        ends=ends,
        fails=hello.fails,
        life=life,
    )
    try:
        shared = shared_pair(up, dn, options)
        if shared is not None:
            session.refuse(shared)
        session._step(hello.hello)
    except IpcwireError as exc:
        log.warning("%s refused client pid %d: %s", url, hello.pid, exc)
        session.close()
        return None
    return session


def pickle_over_shared_queues(url: str, what: str) -> ConfigurationError:
    """The error for pickle over a pair of queues that others may open."""
    return ConfigurationError(
        f"codec='pickle' refused for {url}: {what} other users open the channel's queues, "
        f"and a queue does not tell one writer from another. The token authenticates only "
        f"the handshake, not the messages after it: a pickle another user put into a queue "
        f"would run here. Use codec='msgpack' or 'json' (safe with any mode), or, when only "
        f"you run both ends, connect with mode=0o600 (the default)",
        endpoint=url,
    )


def shared_pair(
    up: MessageQueue, dn: MessageQueue, options: ChannelOptions
) -> ConfigurationError | None:
    """With pickle, the error for a client's pair that others may open (``connect(mode=
    0o660)``), else None."""
    if options.codec.name != "pickle":
        return None
    have = (os.fstat(up.fileno()).st_mode | os.fstat(dn.fileno()).st_mode) & 0o777
    if not have & 0o077:
        return None
    what = f"the client's queues are mode {have:#o}, which lets"
    return pickle_over_shared_queues(options.url, what)


@dataclass
class Deferred:
    """An announcement a listener could not take for want of descriptors: kept, and taken
    again once ``retry_at`` (monotonic) has passed; the client waits, within its timeout.
    Until then the listener does not read its rendezvous queue (it would only fail again)."""

    held: bytes | None = None
    retry_at: float = 0.0

    def paused(self) -> bool:
        return time.monotonic() < self.retry_at

    def due(self) -> bool:
        """An announcement is held and may be tried again now."""
        return self.held is not None and not self.paused()


def announced(
    q: MessageQueue, options: ChannelOptions, deferred: Deferred
) -> Iterator[ServerSession]:
    """The clients announced on the rendezvous queue ``q`` so far, each with its handshake
    started (see :func:`server_accept`); 64 announcements at most, so accepting them does
    not starve the rest of the caller's work. Out of descriptors, the announcement goes to
    ``deferred`` and nothing more is read until its retry time."""
    if deferred.paused():
        return
    for _ in range(64):
        data, deferred.held = deferred.held, None
        if data is None:
            got = q.try_recv()
            if got is None:
                return
            data = got[0]
        try:
            s = server_accept(data, q.name, options, options.handshake_timeout)
        except ResourceExhausted as exc:
            deferred.held = data
            deferred.retry_at = time.monotonic() + ACCEPT_RETRY
            log.warning("%s; the client waits, accepting again in %g s", exc, ACCEPT_RETRY)
            return
        if s is not None:
            yield s


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
            if _valid_pair(hello, base):
                _unlink_clients(hello.up)
                _unlink_clients(hello.dn)
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

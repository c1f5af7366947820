"""Unix-socket plumbing shared by the blocking and asyncio drivers (no I/O loop here).

Binding is where Unix sockets usually go wrong; this module makes it safe by default:

* the path must fit the kernel's limit (107 bytes on Linux) and its directory must exist and
  be writable, each with a clear error;
* an existing socket file is probed: if a process answers, ``AddressInUse`` names it and the
  file is left alone (never silently stolen); if nothing answers it is stale and removed;
  anything that is not a socket is never removed;
* the socket is bound inside a private 0700 directory, given its mode, then hard-linked into
  place, so no other user can connect before the mode is right, and a file created meanwhile
  by someone else is never replaced (link fails with EEXIST);
* probing, removing a stale file, linking ours and listen() happen under an flock on the
  directory, so two listeners starting at once on the same stale path cannot both decide it
  is stale and remove each other's new socket (the second finds the first alive);
* on close the file is removed only if it is still ours (same inode).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import stat
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final, Literal

from ipcwire._atexit import AtExit
from ipcwire._core.url import Endpoint
from ipcwire._procfs import describe_pid, pids_for_inodes, unix_socket_files, unix_socket_inodes
from ipcwire._stream.listener import listening_here, wait_dropped_closed
from ipcwire.channel import PeerInfo
from ipcwire.errors import (
    AddressInUse,
    ConfigurationError,
    ConnectionRefused,
    InvalidURL,
    IpcwireError,
    PermissionDenied,
    Timeout,
)
from ipcwire.unix._namespaces import is_mount_point, unmapped_uid

__all__ = [
    "UidRefused",
    "UnixAddress",
    "backlog_delays",
    "backlog_full",
    "bind_listener",
    "connect_when_room",
    "explain_connect_error",
    "is_backlog_full",
    "make_authorizer",
    "peer_info",
    "resolve",
    "strict_umask",
]

log = logging.getLogger("ipcwire")

MAX_PATH: Final = 107  # sizeof(sun_path) - 1 on Linux
_LOCK_WAIT: Final = 0.5  # seconds to wait for the directory lock (others hold it ~1 ms)
_UCRED: Final = struct.Struct("3i")
_umask_lock = threading.Lock()
# A listener whose backlog is full is busy, as a TCP server whose SYN queue is: connect()
# tries again after these delays (doubling) until its timeout. Linux's non-blocking unix
# connect() says EAGAIN and offers nothing to wait on, so both APIs poll, the same way.
_BACKLOG_FIRST: Final = 0.001
_BACKLOG_MAX: Final = 0.05


@contextlib.contextmanager
def strict_umask() -> Iterator[None]:
    """Files and sockets created inside are 0600 at most (umask 0o177): a socket bound in
    place, whose mode is set only after it exists, is never open to others meanwhile. The
    umask is the process's, so one thread at a time."""
    with _umask_lock:
        old = os.umask(0o177)
        try:
            yield
        finally:
            os.umask(old)


@dataclass(frozen=True, slots=True)
class UnixAddress:
    """A filesystem path, or an abstract name (Linux), to bind or connect to."""

    path: str | None
    abstract: str | None

    @property
    def sockaddr(self) -> str | bytes:
        if self.abstract is not None:
            # UTF-8, and an escaped byte that is not UTF-8 (unix:@%FF) as itself
            return b"\0" + self.abstract.encode("utf-8", "surrogateescape")
        assert self.path is not None
        return self.path

    def __str__(self) -> str:
        return f"@{self.abstract}" if self.abstract is not None else str(self.path)


def resolve(endpoint: Endpoint) -> UnixAddress:
    """``unix:///abs/path``, ``unix:relative/path`` or ``unix:@abstract``.

    Raises:
        InvalidURL: a host part (``unix://tmp/x``), an empty path, or a path over the limit.
    """
    if endpoint.host:
        raise InvalidURL(
            f"{endpoint.url}: a Unix socket URL has no host; write unix:///{endpoint.host}"
            f"{endpoint.path} (three slashes for an absolute path)",
            endpoint=endpoint.url,
        )
    path = endpoint.path
    if path.startswith("@"):
        if (
            len(path) < 2 or len(path[1:].encode("utf-8", "surrogateescape")) > MAX_PATH
        ):  # the kernel adds a NUL first
            raise InvalidURL(
                f"{endpoint.url}: abstract names are 1 to {MAX_PATH} bytes",
                endpoint=endpoint.url,
            )
        return UnixAddress(None, path[1:])
    if not path:
        raise InvalidURL(f"{endpoint.url} names no socket path", endpoint=endpoint.url)
    size = len(os.fsencode(path))
    if size > MAX_PATH:
        raise InvalidURL(
            f"{endpoint.url}: the path is {size} bytes, over the kernel's limit of {MAX_PATH} "
            f"for Unix sockets; use a shorter directory (such as $XDG_RUNTIME_DIR or /tmp) or "
            f"an abstract name (unix:@name)",
            endpoint=endpoint.url,
        )
    return UnixAddress(path, None)


def peer_info(sock: socket.socket, address: str) -> PeerInfo:
    """pid, uid and gid of the peer from SO_PEERCRED (Linux), else only the address."""
    so_peercred = getattr(socket, "SO_PEERCRED", None)
    if so_peercred is None:
        return PeerInfo(address=address)
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, so_peercred, _UCRED.size))
    return PeerInfo(pid=pid or None, uid=uid, gid=gid, address=address)


class UidRefused(PermissionDenied):
    """An ``allow_uids`` refusal. Its text is what the refused peer is told (its own uid, not
    who else is allowed); ``server_log`` is what the server's log says (the list, the fix)."""

    server_log: str

    def __init__(self, message: str, *, endpoint: str, server_log: str) -> None:
        super().__init__(message, endpoint=endpoint)
        self.server_log = server_log


def make_authorizer(
    url: str, address: str, allow_uids: Iterable[int] | None
) -> Callable[[socket.socket], tuple[PeerInfo, IpcwireError | None]]:
    """The check run on every accepted connection: who is it, and is it allowed?"""
    allowed = None if allow_uids is None else frozenset(allow_uids)

    def authorize(sock: socket.socket) -> tuple[PeerInfo, IpcwireError | None]:
        peer = peer_info(sock, address)
        if allowed is not None and peer.uid not in allowed and unmapped_uid(peer.uid):
            # every uid outside this user namespace's map shows as the overflow uid: adding
            # it to allow_uids would let in every unmapped user
            return peer, UidRefused(
                f"uid {peer.uid} (pid {peer.pid}) may not connect to {url}: the server sees "
                f"your uid as {peer.uid}, the overflow uid (it is not mapped into the server's "
                f"user namespace); ask its owner to map your uid into that namespace",
                endpoint=url,
                server_log=(
                    f"uid {peer.uid} (pid {peer.pid}) is the overflow uid: the client's uid is "
                    f"not mapped into this user namespace, so who it is cannot be told; map "
                    f"the uid it should have into this namespace (unshare --map-users, "
                    f"newuidmap, the runtime's uid map) and allow that uid, never "
                    f"{peer.uid}, which every unmapped user shows as"
                ),
            )
        if allowed is not None and peer.uid not in allowed:
            return peer, UidRefused(
                f"uid {peer.uid} (pid {peer.pid}) may not connect to {url}: the server does "
                f"not allow uid {peer.uid}; ask its owner to add it to the server's allow_uids",
                endpoint=url,
                server_log=(
                    f"uid {peer.uid} (pid {peer.pid}) is not in allow_uids {sorted(allowed)}; "
                    f"if it should connect, add it there (listen({url!r}, "
                    f"allow_uids=[..., {peer.uid}]))"
                ),
            )
        return peer, None

    return authorize


# A pid of 0 from SO_PEERCRED: the peer is outside this pid namespace; no pid in /proc: its
# fds are not ours to read, or it is outside this pid namespace (with /proc mounted for it).
UNSEEN: Final = "a process ipcwire cannot see (in another pid namespace, or not yours to inspect)"


def _owner_text(pid: int | None) -> str:
    return describe_pid(pid) if pid else UNSEEN


def _busy_owner(addr: UnixAddress) -> int | None:
    """The pid behind a listener too busy to accept a probe, from the kernel's tables.

    ipcwire links its sockets into place, so /proc/net/unix knows them by their private
    bind name: match the file's (device, inode) through sock_diag instead."""
    inodes: set[int] = set()
    if addr.path is not None:
        try:
            st = os.stat(addr.path)
        except OSError:
            return None
        table = unix_socket_files() or {}
        inodes = {ino for ino, _listening in table.get((st.st_dev, st.st_ino), [])}
    if not inodes:
        inodes = unix_socket_inodes(str(addr))
    pids = pids_for_inodes(inodes)
    return pids[0] if pids else None


def _probe(addr: UnixAddress) -> tuple[bool, int | None]:
    """Whether something accepts connections at ``addr``, and its pid (never blocks).

    The pid comes from SO_PEERCRED on the probe, which reports the listener's credentials
    (taken when it called listen()), and falls back to /proc for a busy listener.
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(addr.sockaddr)
        return True, peer_info(probe, str(addr)).pid
    except (BlockingIOError, InterruptedError):
        return True, _busy_owner(addr)  # backlog full: alive and busy
    except (ConnectionRefusedError, FileNotFoundError):
        return False, None
    finally:
        probe.close()


def _bound_socket_pid(st: os.stat_result) -> int | Literal[False] | None:
    """A refused probe means a stale file, unless a live socket is still bound to the file
    without listening (a server between bind() and listen(), or one that never listens): the
    pid holding it (None if it cannot be seen), or False when nothing is bound to it."""
    table = unix_socket_files()
    entries = table.get((st.st_dev, st.st_ino)) if table else None
    if not entries:
        return False
    pids = pids_for_inodes({ino for ino, _listening in entries})
    return pids[0] if pids else None


def check_listen_path(addr: UnixAddress, url: str) -> None:
    """Before listening at a path: its directory exists and is writable; a file there is a
    socket nobody listens on or has bound (then it is removed as stale); else the error
    that says who holds it.

    Raises:
        AddressInUse, PermissionDenied, ConfigurationError.
    """
    assert addr.path is not None
    parent = os.path.dirname(os.path.abspath(addr.path))
    if not os.path.isdir(parent):
        raise ConfigurationError(
            f"cannot listen at {url}: the directory {parent} does not exist; create it "
            f"(mkdir -p {parent}) with mode 0700 if only you should reach the socket",
            endpoint=url,
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        if os.statvfs(parent).f_flag & os.ST_RDONLY:  # access() folds EROFS into "denied"
            raise PermissionDenied(
                f"cannot listen at {url}: the file system of {parent} is read-only (a "
                f"read-only container or sandbox?); listen in a directory on a writable one, "
                f"such as $XDG_RUNTIME_DIR or a tmpfs mounted for sockets (or an abstract "
                f"name, unix:@name, which needs no file)",
                endpoint=url,
            )
        st = os.stat(parent)
        raise PermissionDenied(
            f"cannot listen at {url}: directory {parent} is mode {stat.S_IMODE(st.st_mode):04o} "
            f"owned by uid {st.st_uid}, and you (uid {os.getuid()}) may not create files in it; "
            f"use a directory you own such as $XDG_RUNTIME_DIR",
            endpoint=url,
        )
    try:
        st = os.lstat(addr.path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise AddressInUse(
            f"cannot listen at {url}: {addr.path} exists and is not a socket; ipcwire never "
            f"removes it. Choose another path, or remove it yourself if it is garbage",
            endpoint=url,
        )
    try:
        alive, pid = _probe(addr)
    except PermissionError:
        raise PermissionDenied(
            f"cannot listen at {url}: {addr.path} is a socket of uid {st.st_uid} with mode "
            f"{stat.S_IMODE(st.st_mode):04o} that you may not even probe; it belongs to "
            f"someone else: choose another path",
            endpoint=url,
        ) from None
    if alive:
        raise listening_here(url, pid) or AddressInUse(
            f"cannot listen at {url}: {_owner_text(pid)} is listening there. Stop it, or "
            f"choose another path (`ipcwire doctor {url}` shows more)",
            pid=pid,
            endpoint=url,
        )
    bound = _bound_socket_pid(st)
    if bound is not False:
        raise listening_here(url, bound) or AddressInUse(
            f"cannot listen at {url}: {_owner_text(bound)} has a socket bound to {addr.path} "
            f"and does not listen on it (yet). Stop it, or choose another path",
            pid=bound,
            endpoint=url,
        )
    log.info("removing stale socket file %s (nothing answers there)", addr.path)
    try:
        os.unlink(addr.path)
    except FileNotFoundError:
        pass
    except PermissionError:  # another user's file in a sticky directory such as /tmp
        raise PermissionDenied(
            f"cannot listen at {url}: {addr.path} is a stale socket (nothing answers there) of "
            f"uid {st.st_uid}, and {parent} is sticky (mode "
            f"{stat.S_IMODE(os.stat(parent).st_mode):04o}): only its owner or root may remove "
            f"it. Have uid {st.st_uid} (or root) rm {addr.path}, or choose another path",
            endpoint=url,
        ) from None
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
        # a mount point (a socket file bind-mounted on its own in this mount namespace)
        raise AddressInUse(
            f"cannot listen at {url}: {addr.path} is a stale socket (nothing answers there) "
            f"bind-mounted on its own in this mount namespace, so it cannot be removed "
            f"(EBUSY). Unmount it (umount {addr.path}), or bind-mount the directory that holds "
            f"the socket instead of the file",
            endpoint=url,
        ) from None


def bind_listener(
    addr: UnixAddress, url: str, *, mode: int, backlog: int
) -> tuple[socket.socket, Callable[[], None]]:
    """A listening socket at ``addr``, and the function that cleans up after it.

    Raises:
        AddressInUse, PermissionDenied, ConfigurationError: each naming the fix.
    """
    wait_dropped_closed()  # (a listener this program dropped may still hold it)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if addr.abstract is not None:
            try:
                sock.bind(addr.sockaddr)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                pid = _probe(addr)[1]
                raise listening_here(url, pid) or AddressInUse(
                    f"cannot listen at {url}: {_owner_text(pid)} already holds that "
                    f"abstract name; choose another",
                    pid=pid,
                    endpoint=url,
                ) from exc
            sock.listen(backlog)
            return sock, lambda: None
        with _directory_lock(addr.path):
            check_listen_path(addr, url)
            ident = _bind_private(sock, addr, mode)
            # Listening before the lock is released: a socket bound but not listening refuses
            # connections, so the next listener's probe would take it for a stale file.
            sock.listen(backlog)
    except BaseException:
        sock.close()
        raise

    assert addr.path is not None
    return sock, remove_on_close(addr.path, ident)


def remove_on_close(path: str, ident: tuple[int, int] | None = None) -> Callable[[], None]:
    """What removes a listener's socket file at ``path`` when it closes: only while the file
    is still the one made (``ident``, its device and inode; by default what is there now),
    and only in the process that made it (a forked child closing its copy of the listener
    leaves its parent's file alone)."""
    path = os.path.abspath(path)  # unix:relative.sock: the file even if cwd changes
    if ident is None:
        try:
            st = os.lstat(path)
        except OSError:
            return lambda: None
        ident = (st.st_dev, st.st_ino)
    owner = os.getpid()

    def cleanup() -> None:
        if os.getpid() != owner:
            return
        try:
            st = os.lstat(path)
            if (st.st_dev, st.st_ino) == ident:
                os.unlink(path)
        except OSError:
            pass

    # Also at interpreter exit, if the listener is never closed (ipcwire._atexit).
    return AtExit(cleanup).run


@contextlib.contextmanager
def _directory_lock(path: str | None) -> Iterator[None]:
    """Hold an exclusive flock on the directory of ``path`` while binding (nothing is created).

    Other listeners hold it for a few system calls. Anyone who may read the directory can
    take it too, so the wait is bounded: after ``_LOCK_WAIT`` seconds (or without read access
    to the directory) binding goes on unlocked, as it would without this lock.
    """
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path or ".")), os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield
        return
    try:
        deadline = time.monotonic() + _LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    log.warning("%s stays locked; binding without the lock", path)
                    break
                time.sleep(0.001)
        yield
    finally:
        os.close(fd)  # releases the lock


def _bind_private(sock: socket.socket, addr: UnixAddress, mode: int) -> tuple[int, int]:
    assert addr.path is not None
    path = addr.path
    parent = os.path.dirname(os.path.abspath(path))
    private = tempfile.mkdtemp(prefix=".iw", dir=parent)  # mode 0700
    tmp = os.path.join(private, "s")
    try:
        if len(os.fsencode(tmp)) <= MAX_PATH:
            sock.bind(tmp)
            os.chmod(tmp, mode)
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise AddressInUse(
                    f"cannot listen at unix://{path}: another process created it just now",
                    endpoint=f"unix://{path}",
                ) from None
        else:
            # The private name would be over the limit: bind in place under a strict umask.
            with strict_umask():
                sock.bind(path)
            os.chmod(path, mode)
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        os.rmdir(private)
    st = os.lstat(path)
    return (st.st_dev, st.st_ino)


# A socket file bind-mounted on its own (docker run -v /run/app.sock:/run/app.sock) keeps
# the socket it showed when it was mounted; a restarted server's listen() makes a new file.
MOUNTED_FILE: Final = (
    "a socket file bind-mounted on its own (as `-v /run/app.sock:/run/app.sock` or "
    "`mount --bind` of the file does): it shows the socket the server had when it was "
    "mounted, and a server that restarted since made a new file, which this mount does not "
    "show (nor can it be removed here: rm says 'Device or resource busy'). Bind-mount the "
    "directory that holds the socket, not the socket file, and start this container or "
    "sandbox again"
)


def explain_connect_error(exc: OSError, addr: UnixAddress, url: str) -> IpcwireError | None:
    """A helpful error for the usual connect failures, or None to use the generic one."""
    if exc.errno == errno.ENOENT:
        return ConnectionRefused(
            f"no socket at {url}: the file {addr.path} does not exist. Is the server running "
            f"(and listening at this exact path)? Pass reconnect=SECONDS to wait for it",
            endpoint=url,
        )
    if exc.errno == errno.ECONNREFUSED and addr.path is not None and is_mount_point(addr.path):
        return ConnectionRefused(
            f"nothing listens at {url}: {addr.path} is a mount point, {MOUNTED_FILE}",
            endpoint=url,
        )
    if exc.errno == errno.ECONNREFUSED and addr.abstract is not None:
        # An abstract name has no file to go stale: refused means nothing holds it here.
        return ConnectionRefused(
            f"nothing listens on the abstract name @{addr.abstract} in this process's network "
            f"namespace ({url}): abstract names are per network namespace, so a server in "
            f"another container or network namespace is not reachable by it (use a path "
            f"socket in a directory both share). Start the server, or pass reconnect=SECONDS "
            f"to keep trying until it is up",
            endpoint=url,
        )
    if exc.errno == errno.ECONNREFUSED:
        return ConnectionRefused(
            f"nothing listens at {url}: the socket file {addr.path} exists but no process "
            f"accepts on it (stale, left by a server that died?). Restart the server; "
            f"ipcwire's listen() removes stale files itself",
            endpoint=url,
        )
    if exc.errno in (errno.EACCES, errno.EPERM) and addr.path is not None:
        try:
            st = os.stat(addr.path)
            detail = (
                f"the socket is mode {stat.S_IMODE(st.st_mode):04o} owned by uid {st.st_uid} "
                f"gid {st.st_gid}; you are uid {os.getuid()}: run as the owner, or have the "
                f"server listen with mode=0o660 and a group you share"
            )
        except PermissionError:
            detail = f"a directory on the way to {addr.path} does not let uid {os.getuid()} through"
        return PermissionDenied(f"permission denied connecting to {url}: {detail}", endpoint=url)
    return None


def is_backlog_full(exc: OSError) -> bool:
    """Whether a unix ``connect()`` failed because the listener's backlog is full (Linux
    says EAGAIN to a non-blocking connect then; it never means "in progress" here)."""
    return exc.errno == errno.EAGAIN


def backlog_delays() -> Iterator[float]:
    """Pauses between connect attempts to a listener whose backlog is full."""
    delay = _BACKLOG_FIRST
    while True:
        yield delay
        delay = min(delay * 2, _BACKLOG_MAX)


def backlog_full(url: str, limit: float) -> Timeout:
    """The error once a listener's backlog stayed full for the whole connect timeout."""
    return Timeout(
        f"the server at {url} is not accepting connections: its listen backlog stayed full "
        f"for {limit:g} s (it is overloaded, or stopped calling accept()). Retry later, give "
        f"connect() a longer timeout=, or have the server accept faster (or listen with a "
        f"larger backlog=)",
        endpoint=url,
    )


def connect_when_room(
    sock: socket.socket, sockaddr: str | bytes, deadline: float, url: str, limit: float
) -> None:
    """``sock.connect(sockaddr)`` (a socket with a timeout), trying again while the
    listener's backlog is full, until ``deadline`` (``time.monotonic()``).

    Raises:
        Timeout: the backlog stayed full (:func:`backlog_full`, ``limit`` for its words).
        OSError: any other failure of connect.
    """
    delays = backlog_delays()
    while True:
        try:
            sock.connect(sockaddr)
            return
        except BlockingIOError as exc:
            if not is_backlog_full(exc):
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise backlog_full(url, limit) from exc
            time.sleep(min(next(delays), left))  # busy: nothing to wait on (see above)

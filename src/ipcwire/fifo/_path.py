"""Named pipes on disk: create safely, one listener each, open without hanging, lock writes.

Open semantics (POSIX): opening a FIFO for reading blocks until a writer opens it, and for
writing until a reader does; with O_NONBLOCK the read open succeeds at once and the write
open fails with ENXIO while nobody reads. ipcwire always opens with O_NONBLOCK and waits with
its own deadline, so no open hangs past its timeout.

Atomicity (the rule for several writers): the kernel writes at most PIPE_BUF bytes (4096 on
Linux, 512 by POSIX) atomically; a longer write can be split, and another writer's bytes can
land in the middle. So an ipcwire writer holds an exclusive ``flock`` on the FIFO while it
writes a longer message, and a shared one while it writes a message (frame included) of up to
PIPE_BUF bytes with one ``write`` (shorter writes do not interleave with each other, but one
written without the lock could land in a gap of a long one, which the kernel splits when the
pipe is full): ipcwire writers never interleave, whatever the size. A writer that is not ipcwire
(``echo ... > fifo``) takes no lock: keep its messages, and the messages of everyone writing
at the same time as it, under PIPE_BUF bytes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from dataclasses import dataclass
from typing import Final

from ipcwire._atexit import AtExit
from ipcwire._core.url import Endpoint
from ipcwire._oserror import translate
from ipcwire._procfs import describe_pid, fifo_holders
from ipcwire.errors import (
    AddressInUse,
    ConnectionRefused,
    InvalidURL,
    PermissionDenied,
    ResourceExhausted,
    Timeout,
)
from ipcwire.pipe._fdutil import grow_pipe
from ipcwire.spool._flock import FileLock

__all__ = [
    "CreatedFifos",
    "FifoPaths",
    "claim_fifo",
    "client_busy",
    "create_fifo",
    "hold_session_once",
    "lock_path",
    "lock_reply",
    "lock_reply_once",
    "no_reader",
    "open_read",
    "open_write",
    "open_write_once",
    "resolve",
]

_RETRY_MAX: Final = 0.05  # longest pause between write-open attempts while no reader exists


@dataclass(frozen=True, slots=True)
class FifoPaths:
    """The FIFO a listener reads (clients write), and the optional reply FIFO."""

    path: str
    reply: str | None


def resolve(endpoint: Endpoint) -> FifoPaths:
    """``fifo:///run/app/in.fifo?reply=/run/app/out.fifo``.

    Raises:
        InvalidURL: no absolute path.
    """
    path = endpoint.path
    if endpoint.host:
        raise InvalidURL(
            f"{endpoint}: write fifo:/// with three slashes and an absolute path, such as "
            f"fifo:///run/user/1000/app.fifo"
        )
    if not path.startswith("/"):
        raise InvalidURL(f"{endpoint}: the FIFO path must be absolute (fifo:///path)")
    reply = endpoint.params.get("reply") or None
    if reply is not None and not reply.startswith("/"):
        raise InvalidURL(f"{endpoint}: reply= must be an absolute path")
    if reply == path:
        raise InvalidURL(f"{endpoint}: reply= must be another FIFO than the path itself")
    return FifoPaths(path, reply)


def create_fifo(path: str, url: str, mode: int) -> bool:
    """Make the FIFO if missing (``mode``, 0600 by default); True if we created it.

    Raises:
        AddressInUse: the path exists and is not a FIFO (it is never replaced).
        PermissionDenied: the directory is not ours to use, or the existing FIFO belongs to
            another user or has a wider mode than ``mode``.
        ResourceExhausted: a full file system (no space, no inode), naming the URL.
    """
    try:
        os.mkfifo(path, mode)
    except FileExistsError:
        pass
    except PermissionError as exc:
        raise PermissionDenied(
            f"cannot create {path} for {url}: permission denied in "
            f"{os.path.dirname(path) or '.'}; use a directory you own (such as "
            f"$XDG_RUNTIME_DIR)",
            endpoint=url,
        ) from exc
    except FileNotFoundError as exc:
        raise PermissionDenied(
            f"cannot create {path} for {url}: the directory does not exist; create it first",
            endpoint=url,
        ) from exc
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise no_room(exc, url, path, "the FIFO") from exc
        raise translate(exc, url, f"creating the FIFO {path} for") from exc
    else:
        os.chmod(path, mode)  # exact mode, whatever the umask
        return True
    st = os.lstat(path)
    if not stat.S_ISFIFO(st.st_mode):
        raise AddressInUse(
            f"cannot use {path} for {url}: it exists and is not a FIFO "
            f"({_kind(st.st_mode)}); ipcwire never replaces other files, so pick another path "
            f"or remove it yourself",
            endpoint=url,
        )
    _check_existing(path, url, st, mode)
    return False


class CreatedFifos:
    """A listener's hold on its FIFOs (of ``paths``): the lock of each (see
    :func:`claim_fifo`), and the FIFOs it created, to remove when it closes: only by the
    process that created them (a forked child closing its copy of the listener leaves its
    parent's FIFOs and locks alone), and only while each is still the file that was created.

    Raises:
        AddressInUse: another live listener holds one of the FIFOs; a path is not a FIFO.
        PermissionDenied: as :func:`create_fifo`.
    """

    def __init__(self, paths: FifoPaths, url: str, mode: int) -> None:
        self._owner = os.getpid()
        self._files: list[tuple[str, int]] = []  # the FIFOs created, then the lock files
        self._locks: list[FileLock] = []
        self._at_exit = AtExit(self._remove)  # also if the listener is never closed
        try:
            for path in (paths.path, paths.reply):
                if path is None:
                    continue
                lock = claim_fifo(path, url)
                if lock is not None:
                    self._locks.append(lock)
                if create_fifo(path, url, mode):
                    self._files.append((path, os.stat(path).st_ino))
                if lock is None:
                    _no_other_reader(path, url)
        except BaseException:
            self._add_lock_files()
            self.remove()
            raise
        self._add_lock_files()

    def _add_lock_files(self) -> None:
        # Removed after the FIFOs, while still held: a listener starting meanwhile must not
        # take over a FIFO that is about to go.
        for lock in self._locks:
            with contextlib.suppress(OSError):
                self._files.append((lock.path, os.stat(lock.path).st_ino))

    def remove(self) -> None:
        self._at_exit.run()

    def _remove(self) -> None:
        files, self._files = self._files, []
        locks, self._locks = self._locks, []
        if os.getpid() == self._owner:
            for path, ino in files:
                try:
                    if os.lstat(path).st_ino == ino:  # still ours: never a stranger's file
                        os.unlink(path)
                except OSError:
                    pass
        for lock in locks:  # in a forked child, this closes only its copy
            lock.release()


def lock_path(path: str) -> str:
    """The lock file of the FIFO at ``path``: beside it, ``PATH.lock``."""
    return f"{path}.lock"


def claim_fifo(path: str, url: str) -> FileLock | None:
    """Take the listener's lock of the FIFO at ``path`` (an exclusive ``flock`` on
    :func:`lock_path`, held for the listener's life): a FIFO has one reader, and a second
    one would silently take a share of the messages. The kernel releases the lock when its
    holder dies (``kill -9`` included), so a FIFO left by a dead listener is taken over.
    None where the directory does not let this user create the lock file (then
    :func:`_no_other_reader` looks in /proc instead).

    Raises:
        AddressInUse: a live listener holds the lock; the message names its process.
        ConfigurationError: the lock file is a symbolic link.
        ResourceExhausted: no room for the lock file (a full file system), or out of
            descriptors; naming the URL.
    """
    lock = FileLock(lock_path(path), mode=0o600)
    try:
        lock.acquire(timeout=0)
    except PermissionDenied:
        return None
    except ResourceExhausted as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            raise no_room(cause, url, lock.path, "the FIFO's lock file") from exc
        raise ResourceExhausted(f"cannot listen at {url}: {exc}", endpoint=url) from exc
    except Timeout:
        holder = lock.holder()
        raise _in_use(
            path,
            url,
            holder.describe() if holder else "another process",
            holder.pid if holder else None,
        ) from None
    return lock


def no_room(exc: OSError, url: str, path: str, what: str) -> ResourceExhausted:
    """The error for ``what`` (the FIFO, its lock file) at ``path`` that a full file system
    (``exc``: ENOSPC, EDQUOT) kept the listener at ``url`` from making."""
    where = os.path.dirname(path) or "."
    return ResourceExhausted(
        f"cannot listen at {url}: no room for {what} {path} ({exc.strerror}): {where} has no "
        f"free space or no free inodes (df -h {where}, df -i {where}), or you are over a disk "
        f"quota; free some there, or listen on a FIFO in a directory on another file system",
        endpoint=url,
    )


def _in_use(path: str, url: str, who: str, pid: int | None) -> AddressInUse:
    return AddressInUse(
        f"{url} is in use: a listener in {who} reads {path}, and a FIFO has one reader (a "
        f"second one would take a share of the messages); stop that listener, or listen on "
        f"another path",
        pid=pid,
        endpoint=url,
    )


def _no_other_reader(path: str, url: str) -> None:
    """Without a lock file (a directory this user may not write): refuse a FIFO another
    process has open for reading, found in /proc (best effort: another user's processes
    are not visible without root).

    Raises:
        AddressInUse: another process reads the FIFO.
    """
    try:
        readers = fifo_holders(os.stat(path))[0]
    except OSError:
        return
    if readers:
        pid = min(readers)
        raise _in_use(path, url, describe_pid(pid), pid)


def _check_existing(path: str, url: str, st: os.stat_result, mode: int) -> None:
    """An existing FIFO is used only if it is ours and no more open than ``mode``: its owner
    decides who may read it (and so take messages) or write it (and so inject them).

    Raises:
        PermissionDenied: another owner, or a wider mode.
    """
    uid = os.geteuid()
    if st.st_uid != uid:
        raise PermissionDenied(
            f"cannot use {path} for {url}: the FIFO exists and is owned by uid {st.st_uid}; "
            f"you are uid {uid}, and its owner decides who may read and write it. Remove it "
            f"if it is stale, or use a path in a directory you own (such as $XDG_RUNTIME_DIR)",
            endpoint=url,
        )
    have = st.st_mode & 0o777
    if have & ~mode:
        raise PermissionDenied(
            f"cannot use {path} for {url}: the FIFO exists with mode {have:#o}, which lets "
            f"more users read or write it than mode={mode:#o}; chmod {mode:o} it, or listen "
            f"with mode={have:#o} if that is meant",
            endpoint=url,
        )


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return name
    return "a special file"


def _check_fifo(path: str, url: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConnectionRefused(
            f"there is no FIFO at {path} ({url}): start the reader first (ipcwire.listen "
            f"creates it); connect() waits (timeout=) for a reader to open a FIFO that "
            f"exists, not for the FIFO to be made",
            endpoint=url,
        ) from None
    except PermissionError as exc:
        raise PermissionDenied(f"cannot reach {path} for {url}: permission denied") from exc
    if not stat.S_ISFIFO(st.st_mode):
        raise ConnectionRefused(
            f"{path} ({url}) is {_kind(st.st_mode)}, not a FIFO: check the path",
            endpoint=url,
        )


def open_read(path: str, url: str) -> int:
    """The read end, at once (O_NONBLOCK), close-on-exec.

    Raises:
        ConnectionRefused: no FIFO there.
        PermissionDenied: not allowed to read it.
    """
    _check_fifo(path, url)
    try:
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except PermissionError as exc:
        raise PermissionDenied(
            f"cannot open {path} for reading ({url}): permission denied (the FIFO is mode "
            f"{_mode(path)}); run as its owner or create it with mode=0o660 and a shared group",
            endpoint=url,
        ) from exc


def _mode(path: str) -> str:
    try:
        return oct(os.stat(path).st_mode & 0o777)
    except OSError:
        return "?"


def open_write_once(path: str, url: str) -> int | None:
    """One attempt at the write end: the fd, or None while nobody reads the FIFO.

    Raises:
        ConnectionRefused: no FIFO at that path.
        PermissionDenied: not allowed to write it.
    """
    _check_fifo(path, url)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except PermissionError as exc:
        raise PermissionDenied(
            f"cannot open {path} for writing ({url}): permission denied (the FIFO is mode "
            f"{_mode(path)}); run as its owner or create it with mode=0o660",
            endpoint=url,
        ) from exc
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return None
        raise
    grow_pipe(fd)
    return fd


def no_reader(path: str, url: str, timeout: float) -> ConnectionRefused:
    """The error for a FIFO nobody read within the timeout."""
    return ConnectionRefused(
        f"nobody has {path} open for reading ({url}) after {timeout} s: start the reader "
        f"(ipcwire.listen) first, or raise timeout=",
        endpoint=url,
    )


def lock_reply_once(path: str, url: str) -> int | None:
    """Reply mode, the client: the reply FIFO's read end, once it is this client's turn;
    None while another client is connected or the listener's session for the one before is
    still open.

    The turn is a ``flock`` on the reply FIFO: a connected client and an open listener
    session each hold it shared; a client comes in through it exclusive (so only when
    neither is there), throws away what is left in the FIFO (late replies to the client
    before: no session can write while the lock is exclusive), then holds it shared for the
    channel's life. A client killed -9 releases it. Without this a second client read the
    first one's replies, or wrote into the first one's session.

    Raises:
        ConnectionRefused: no FIFO there.
        PermissionDenied: not allowed to read it.
    """
    fd = open_read(path, url)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _discard_pending(fd)
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # lost the race (rare): next time
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _discard_pending(fd: int) -> None:
    for _ in range(256):  # bounded: a writer that is not ipcwire may keep writing
        try:
            if not os.read(fd, 65536):
                return
        except BlockingIOError:
            return


def hold_session_once(fd: int) -> bool:
    """Reply mode, the listener: take the shared lock of a session on the reply FIFO
    (``fd``, its write end) for the session's life, once a client holds its turn; False
    while no client holds it yet (the reader seen may be a client's passing try) or one is
    coming in. Taking it for a passing try would lock that client out."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pass  # a client holds its turn, or is coming in
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)  # nobody's turn yet
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # a client is coming in
    return True


def client_busy(path: str, url: str, timeout: float) -> ConnectionRefused:
    """The error for a reply FIFO another client still held after the timeout."""
    return ConnectionRefused(
        f"{url} still had another client after {timeout} s (with reply=, one client at a "
        f"time: it holds {path}); wait until it closes, or raise timeout=",
        endpoint=url,
    )


def lock_reply(path: str, url: str, timeout: float, deadline: float) -> int:
    """:func:`lock_reply_once`, waiting until ``deadline`` for the client before us to leave.

    Raises:
        ConnectionRefused: no FIFO, or another client still connected at the deadline.
        PermissionDenied: not allowed to read it.
    """
    pause = 0.001
    while (fd := lock_reply_once(path, url)) is None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise client_busy(path, url, timeout)
        time.sleep(min(pause, left))  # a lock held by another process does not signal
        pause = min(pause * 2, _RETRY_MAX)
    return fd


def open_write(path: str, url: str, timeout: float, deadline: float | None = None) -> int:
    """The write end, waiting up to ``timeout`` (or until ``deadline``) for a reader.

    Raises:
        ConnectionRefused: no FIFO, or no reader within the timeout.
        PermissionDenied: not allowed to write it.
    """
    if deadline is None:
        deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        fd = open_write_once(path, url)
        if fd is not None:
            return fd
        left = deadline - time.monotonic()
        if left <= 0:
            raise no_reader(path, url, timeout)
        time.sleep(min(pause, left))  # nothing to wait on: a FIFO does not signal a reader
        pause = min(pause * 2, _RETRY_MAX)


def wait_open_write(path: str, url: str, deadline: float) -> int | None:
    """One attempt at the write end (the reply FIFO); None while nobody reads it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            if time.monotonic() >= deadline:
                raise Timeout(
                    f"no client opened the reply FIFO {path} of {url} in time", endpoint=url
                ) from exc
            return None
        if isinstance(exc, PermissionError):
            raise PermissionDenied(f"cannot open {path} for writing ({url})") from exc
        raise
    grow_pipe(fd)
    return fd

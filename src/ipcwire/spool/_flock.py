"""``flock`` file locks that say who holds them.

::

    with FileLock("/var/lib/app/db.lock").acquire(timeout=5):
        ...                                  # Timeout names the holder if it stays busy

The kernel releases an ``flock`` lock when its holder's descriptor closes, including when the
process is killed, so a lock never outlives a crashed holder. When the lock is busy, the holder
is read from ``/proc/locks`` (authoritative on Linux) and from the note the holder wrote into
the lock file (pid, command, since when); both appear in the :class:`~ipcwire.errors.Timeout`
message. Waiting wakes on the holder's close through inotify where available, else polls.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from ipcwire._oserror import translate
from ipcwire._procfs import describe_pid
from ipcwire.aio._timeouts import within
from ipcwire.errors import ConfigurationError, PermissionDenied, Timeout
from ipcwire.spool._watch import IN_CLOSE, Watcher

__all__ = ["FileLock", "LockHolder", "lock_holders"]

_MAX_POLL = 0.05
# O_NOFOLLOW: a lock file in a shared directory must not be a planted symlink.
_FLAGS = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW


@dataclass(frozen=True, slots=True)
class LockHolder:
    """Who holds a lock: ``pid`` from the kernel where it tells, plus the holder's own note."""

    pid: int | None
    command: str = ""
    since: float | None = None  # time.time() when the holder took the lock

    def describe(self) -> str:
        """``pid 1234 (python worker.py) since 12:00:01``."""
        who = describe_pid(self.pid) if self.pid else "an unknown process"
        if self.command and "(" not in who:
            who += f" ({self.command})"
        if self.since:
            who += " since " + time.strftime("%H:%M:%S", time.localtime(self.since))
        return who


def lock_holders(path: str | os.PathLike[str]) -> list[int]:
    """Pids holding a lock on ``path`` per ``/proc/locks`` (Linux; empty elsewhere)."""
    try:
        st = os.stat(path)
        text = Path("/proc/locks").read_text()
    except OSError:
        return []
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = []
    for line in text.splitlines():
        fields = line.split()
        if "->" in fields:  # a waiter, not a holder
            continue
        if len(fields) >= 6 and fields[5] == key and fields[4].lstrip("-").isdigit():
            pid = int(fields[4])
            if pid > 0:
                pids.append(pid)
    return sorted(set(pids))


class FileLock:
    """An advisory whole-file lock on ``path`` (created if missing, mode ``mode``).

    ``shared=True`` takes a shared (read) lock: many shared holders, or one exclusive.
    Not reentrant; one FileLock object is one holder. Locks are per open file, so two
    FileLock objects on the same path exclude each other even in one process.

    A holder may remove the file before releasing it (remove first, then release). A lock
    taken on a file that is no longer the one at ``path`` (opened just before its holder
    removed it) does not count: acquiring checks, after ``flock``, that its file is still at
    ``path``, and otherwise tries again with the file there now. ``created`` is True when
    the last acquisition made the lock file (there was none).

    ``own=True``: a lock file that is there already must be this user's and writable by
    nobody else (in a shared directory, another user could have made it first, to squat
    the lock or read what its holder writes into it); otherwise acquiring raises
    ``PermissionDenied`` naming its owner and mode, before writing anything into it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        shared: bool = False,
        mode: int = 0o644,
        own: bool = False,
    ):
        self.path = os.fspath(path)
        self.shared = shared
        self.mode = mode
        self.own = own
        self._fd: int | None = None
        self.owner: int | None = None  # the pid that took the lock (a forked child shares it)
        self.created = False  # the last acquire created the lock file (there was none)

    @property
    def locked(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def _try(self) -> bool:
        if self._fd is not None:
            raise ConfigurationError(f"this FileLock already holds {self.path} (not reentrant)")
        op = (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
        while True:
            fd, created = self._open()
            if self.own and not created:
                self._check_own(fd)
            try:
                fcntl.flock(fd, op)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return False
                raise translate(exc, self.path, "locking") from exc
            if self._still_at_path(fd):
                break
            # Its holder removed the file, then let go (an mq listener closing does): the lock
            # we got is on a file nobody opens any more, while a newcomer may hold the one now
            # at the path. Locking that one is what counts.
            os.close(fd)
        self._fd = fd
        self.created = created
        self.owner = os.getpid()
        if not self.shared:
            self._write_note(fd)
        return True

    def _open(self) -> tuple[int, bool]:
        """A descriptor on the lock file, and whether this call created the file."""
        try:
            while True:
                try:
                    return os.open(self.path, _FLAGS | os.O_EXCL, self.mode), True
                except FileExistsError:
                    pass
                try:
                    return os.open(self.path, _FLAGS & ~os.O_CREAT), False
                except FileNotFoundError:
                    continue  # removed between the two opens: create it after all
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ConfigurationError(
                    f"the lock file {self.path} is a symbolic link; refusing to follow it (a "
                    f"link planted in a shared directory could point at any file)"
                ) from exc
            raise translate(exc, self.path, "opening the lock file") from exc

    def _check_own(self, fd: int) -> None:
        """``own=True``: the lock file ``fd`` is this user's, writable by nobody else.

        Raises:
            PermissionDenied: another owner, or a mode that lets others write it (``fd``
                is closed).
        """
        uid = os.geteuid()
        try:
            st = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            raise translate(exc, self.path, "checking the lock file") from exc
        have = st.st_mode & 0o777
        if st.st_uid == uid and not have & 0o022:
            return
        os.close(fd)
        raise PermissionDenied(
            f"the lock file {self.path} is mode {have:#o} and owned by uid {st.st_uid} (you "
            f"are uid {uid}): it is not this user's alone, so it is not trusted (another user "
            f"may have made it first). Have its owner or root remove it if it is stale",
            endpoint=self.path,
        )

    def _still_at_path(self, fd: int) -> bool:
        """True when the file ``fd`` has open is still the one at the path (the standard
        check after flock: a lock on a file removed meanwhile excludes nobody)."""
        try:
            mine = os.fstat(fd)
            there = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        except OSError as exc:
            os.close(fd)
            raise translate(exc, self.path, "checking the lock file") from exc
        return (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)

    @staticmethod
    def _write_note(fd: int) -> None:
        note = {"pid": os.getpid(), "command": _own_command(), "since": time.time()}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(note).encode() + b"\n", 0)
        except OSError:
            pass  # a read-only lock file still locks

    def holder(self) -> LockHolder | None:
        """Who holds the lock now (None when nobody seems to)."""
        pids = lock_holders(self.path)
        note: dict[str, object] = {}
        try:
            raw = Path(self.path).read_text()
            loaded = json.loads(raw) if raw.strip() else {}
            note = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            pass
        noted = note.get("pid")
        pid = pids[0] if pids else (noted if isinstance(noted, int) else None)
        if not pids and not noted:
            return None
        since = note.get("since") if note.get("pid") == pid else None
        command = note.get("command") if note.get("pid") == pid else ""
        return LockHolder(
            pid=pid,
            command=command if isinstance(command, str) else "",
            since=float(since) if isinstance(since, int | float) else None,
        )

    def _busy(self, timeout: float | None) -> Timeout:
        h = self.holder()
        who = h.describe() if h else "another process"
        return Timeout(
            f"the lock {self.path} is held by {who}"
            + (f"; still busy after {timeout} s" if timeout else ""),
            endpoint=self.path,
        )

    def acquire(self, timeout: float | None = None) -> Self:
        """Take the lock, waiting up to ``timeout`` seconds (None: forever; 0: try once).

        Returns self, so ``with lock.acquire(timeout=5): ...`` works.

        Raises:
            Timeout: still held by someone else; the message names the holder.
            PermissionDenied: the lock file cannot be opened.
            ConfigurationError: the lock file is a symbolic link, or this object holds it.
        """
        if self._try():
            return self
        if timeout is not None and timeout <= 0:
            raise self._busy(None)
        deadline = None if timeout is None else time.monotonic() + timeout
        watcher = Watcher([(self.path, IN_CLOSE)], poll_interval=_MAX_POLL)
        try:
            while not self._try():
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    raise self._busy(timeout)
                # inotify wakes on the holder's close; the cap covers LOCK_UN without close
                watcher.wait(_MAX_POLL * 10 if wait is None else min(wait, _MAX_POLL * 10))
        finally:
            watcher.close()
        return self

    async def acquire_async(self, timeout: float | None = None) -> Self:
        """:meth:`acquire` for asyncio: the event loop keeps running while waiting.

        Raises:
            Timeout: still held by someone else; the message names the holder.
        """
        if self._try():
            return self
        if timeout is not None and timeout <= 0:
            raise self._busy(None)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        watcher = Watcher([(self.path, IN_CLOSE)], poll_interval=_MAX_POLL)
        fd = watcher.fileno()
        event = asyncio.Event()
        if fd is not None:
            loop.add_reader(fd, event.set)
        try:
            while not self._try():
                wait = None if deadline is None else deadline - loop.time()
                if wait is not None and wait <= 0:
                    raise self._busy(timeout)
                cap = _MAX_POLL * 10 if fd is not None else _MAX_POLL
                try:
                    async with within(cap if wait is None else min(wait, cap)):
                        await event.wait()
                except TimeoutError:
                    pass
                event.clear()
                watcher.drain()
        finally:
            if fd is not None:
                loop.remove_reader(fd)
            watcher.close()
        return self

    def release(self) -> None:
        """Let go of the lock; idempotent. In a forked child this only closes its copy: the
        lock (shared by the copies) and its note stay its parent's."""
        fd, self._fd = self._fd, None
        if fd is not None:
            if not self.shared and self.owner == os.getpid():
                try:
                    os.ftruncate(fd, 0)
                except OSError:
                    pass
            os.close(fd)  # closing releases the flock

    def __enter__(self) -> Self:
        if self._fd is None:
            self.acquire()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    async def __aenter__(self) -> Self:
        if self._fd is None:
            await self.acquire_async()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<FileLock {self.path} {'held' if self._fd is not None else 'free'}>"


def _own_command() -> str:
    try:
        raw = Path("/proc/self/cmdline").read_bytes()
        return " ".join(p.decode(errors="replace") for p in raw.split(b"\0") if p)[:200]
    except OSError:
        return ""

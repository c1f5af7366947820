"""The spool on disk: a crash-proof queue of files in a directory. No waiting here.

Layout (maildir-like)::

    dir/tmp/   a producer writes here, fsyncs, then renames into new/ (readers never see a
               half-written message); it holds an flock on the file while writing
    dir/new/   ready messages, named <ns timestamp>.<producer>.<seq>.<attempt>, so sorting
               by name gives FIFO order per producer
    dir/cur/   claimed messages. A consumer opens new/X, takes an flock on it, and renames it
               to cur/X: the rename succeeds for exactly one consumer. It keeps the file open
               (and locked) until it acknowledges (unlink) or releases (rename back to new/).
    dir/dead/  messages given up on: over max_attempts, over max_frame
    dir/.order a lock file: producers hold it shared while renaming into new/, a consumer
               exclusively while listing new/. ``readdir`` is not a snapshot (a name renamed
               in during a listing may be missed while a later one is seen), so without this
               a consumer could take a producer's message before an earlier one.

A claimed message whose consumer died (kill -9 included) is unlocked by the kernel; any
consumer that scans ``cur/`` (every ``reap_interval`` while idle) finds the lock free and
renames the message back into ``new/`` with its attempt count raised: at-least-once delivery.
With ``lease``, a claim held longer than that by a live consumer is also redelivered (copied
to a new file, since the slow consumer still holds the old one's lock).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import secrets
import stat
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ipcwire._deadline import limit
from ipcwire._oserror import translate
from ipcwire._procfs import describe_pid
from ipcwire.errors import (
    ChannelBroken,
    ChannelClosed,
    ConfigurationError,
    FrameTooLarge,
    IpcwireError,
    PermissionDenied,
    RemoteProtocolError,
    ResourceExhausted,
    Timeout,
)
from ipcwire.spool._flock import lock_holders

__all__ = ["Claim", "SpoolStore"]

log = logging.getLogger("ipcwire")

_SUBDIRS: Final = ("tmp", "new", "cur", "dead")
_READ: Final = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
# Opening what is in new/: O_NONBLOCK so that a FIFO put there by someone else does not block
# the open (for a regular file it changes nothing).
_CLAIM: Final = _READ | os.O_NONBLOCK
_STALE_TMP: Final = 60.0  # seconds before an unlocked file in tmp/ counts as abandoned
_ORDER_POLL: Final = 0.01  # longest pause between a producer's tries for a held .order
Buffer = bytes | bytearray | memoryview


def _split(name: str) -> tuple[str, int]:
    """``(base, attempt)`` of a message file name."""
    base, _, attempt = name.rpartition(".")
    try:
        return base, int(attempt)
    except ValueError:
        return name, 0


def _locked(fd: int, *, shared: bool = False) -> bool:
    """Take an exclusive (or ``shared``) flock without waiting; False when someone else
    holds it in a way that excludes it."""
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    return True


@dataclass(eq=False)
class Claim:
    """A message claimed by this process: ``data`` is its payload. Ack or release it once.

    ``ack()``, ``release()`` and ``bury()`` may be called from several threads at once (the
    consumer acks while ``close()`` releases what is unfinished): exactly one of them acts,
    and only that one closes ``fd``. The others return at once (a second ``ack()`` once the
    first has its answer).
    """

    store: SpoolStore
    name: str
    fd: int
    data: bytes
    attempt: int
    claimed_at: float = field(default_factory=time.time)
    done: bool = False
    acked: bool = False  # removed for good by ack() (not released, not redelivered)
    # Taken once, by the call that acts, and never given back: a test-and-set that never
    # waits (so close() cannot hang on a consumer's ack, nor the other way round).
    _turn: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _acking: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def _take(self) -> bool:
        """True for the one call that gets to finish this claim."""
        return self._turn.acquire(blocking=False)

    def ack(self) -> bool:
        """Done with it: remove it for good. False if it had been redelivered meanwhile
        (its lease expired) or released (by ``release()``, or by closing the channel), so
        another consumer may process it too. Again after that: the same answer."""
        with self._acking:  # a second ack() waits for the first one's answer
            if not self._take():
                return self.acked
            self.done = True
            ok = False
            try:
                os.unlink(os.path.join(self.store.cur, self.name))
                ok = True
            except FileNotFoundError:
                log.warning(
                    "ipcwire: %s: message %s was redelivered before its ack (lease expired)",
                    self.store.url,
                    self.name,
                )
            except OSError as exc:
                raise self.store.left_in_cur(exc, self.name, "acknowledging (removing)") from exc
            finally:
                os.close(self.fd)  # unlink first, then unlock: a reaper never sees it free
                self.acked = ok
            return ok

    def release(self) -> None:
        """Not done: put it back at its place in the queue for another attempt.

        Raises:
            PermissionDenied, ChannelBroken: the file system refused; it comes again anyway
                (it stays in cur/, unlocked, for a reaper).
        """
        if not self._take():
            return
        self.done = True
        try:
            self.store.requeue(self.name, self.attempt + 1)
        except OSError as exc:
            raise self.store.left_in_cur(exc, self.name, "putting back") from exc
        finally:
            os.close(self.fd)

    def bury(self, why: str) -> None:
        """Not a message this consumer can use (``why``): move it to dead/."""
        if not self._take():
            return
        self.done = True
        try:
            self.store._bury(self.name, why)
        except OSError as exc:
            raise self.store.left_in_cur(exc, self.name, "moving to dead/") from exc
        finally:
            os.close(self.fd)


class SpoolStore:
    """A spool directory. Thread-safe; one per channel (each keeps its own producer id)."""

    def __init__(
        self,
        path: str,
        url: str,
        *,
        mode: int = 0o700,
        fsync: bool = True,
        lease: float | None = None,
        max_attempts: int | None = None,
    ) -> None:
        if lease is not None and lease <= 0:
            raise ConfigurationError(f"lease= for {url} must be positive seconds (or None)")
        if max_attempts is not None and max_attempts < 1:
            raise ConfigurationError(f"max_attempts= for {url} must be at least 1 (or None)")
        self.path = path
        self.url = url
        self.fsync = fsync
        self.lease = lease
        self.max_attempts = max_attempts
        self.tmp, self.new, self.cur, self.dead = (os.path.join(path, d) for d in _SUBDIRS)
        # Message files get the directories' read/write bits (0o660 for mode=0o770): in a
        # spool shared by a group, any member's consumer must read, touch and lock them.
        self._file_mode = mode & 0o666
        self._make_dirs(mode)
        self._producer = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._seq = 0
        self._last_ts = 0
        self._put_lock = threading.Lock()
        self._claim_lock = threading.Lock()
        # close() during a put (from another thread, or the asyncio driver's close while its
        # executor writes) leaves the descriptors to that put, which closes them when done
        self._state_lock = threading.Lock()
        self._putting = self._closing = False
        self._backlog: list[str] = []  # names seen in new/, in order, not yet tried
        self._unreadable: set[str] = set()  # in new/, but this process may not open them
        self.order_busy = False  # the last scan found .order held (see _scan)
        try:
            self._new_fd = os.open(self.new, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise translate(exc, self.url, f"opening {self.new}") from exc
        try:
            self._order_fd = self._open_order()
        except BaseException:
            os.close(self._new_fd)
            raise

    def _open_order(self) -> int:
        """The .order lock file, created with the files' mode. Read-only is enough for flock,
        so a member of the spool's group can use one another member created."""
        path = os.path.join(self.path, ".order")
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            try:
                fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, self._file_mode)
            except FileExistsError:
                return os.open(path, flags)
            os.fchmod(fd, self._file_mode)  # whatever the umask
            return fd
        except OSError as exc:
            raise translate(exc, self.url, f"opening {path}") from exc

    def _make_dirs(self, mode: int) -> None:
        try:
            parent = os.path.dirname(self.path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            for d in (self.path, self.tmp, self.new, self.cur, self.dead):
                try:
                    os.mkdir(d, mode)
                except FileExistsError:
                    continue
                os.chmod(d, mode)  # exactly mode= (mkdir's mode is cut by the umask)
            usable = os.access(self.new, os.R_OK | os.W_OK | os.X_OK)
        except PermissionError as exc:
            raise self._denied() from exc
        except OSError as exc:
            raise translate(exc, self.url, "creating the spool") from exc
        if not usable:
            raise self._denied()

    def _denied(self) -> PermissionDenied:
        """Name the directory in the way, its mode and owner, and the fix."""
        where = self.new
        while where != os.path.dirname(where):
            try:
                st = os.stat(where)
            except OSError:
                where = os.path.dirname(where)
                continue
            if not os.access(where, os.W_OK | os.X_OK) or where == self.new:
                break
            where = os.path.dirname(where)
        else:
            st = os.stat(where)
        return PermissionDenied(
            f"cannot use the spool {self.path}: {where} is mode {oct(st.st_mode & 0o777)} "
            f"owned by uid {st.st_uid}; you are uid {os.getuid()}: run as the owner, or create "
            f"the spool with mode=0o770 and a shared group (chmod -R g+rwX)",
            endpoint=self.url,
        )

    # -- producing --------------------------------------------------------------------------
    def _next_name(self) -> str:
        ts = max(time.time_ns(), self._last_ts + 1)  # strictly increasing per producer
        self._last_ts = ts
        self._seq += 1
        return f"{ts:020d}.{self._producer}.{self._seq:010d}.0"

    def _write_tmp(self, name: str, data: Buffer) -> int:
        """Write tmp/name and return its descriptor, flock'd: that marks it as being written
        (see _reap_tmp). The caller fsyncs and closes it, before the rename, so a consumer
        never finds a new message locked."""
        tmp = os.path.join(self.tmp, name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, self._file_mode)
        try:
            if self._file_mode != 0o600:
                os.fchmod(fd, self._file_mode)  # whatever the umask
            fcntl.flock(fd, fcntl.LOCK_EX)
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        return fd

    def put(self, data: Buffer, timeout: float | None = None) -> str:
        """Add one message durably (fsync'd before it becomes visible). Returns its name.

        Raises:
            ChannelBroken, ResourceExhausted, PermissionDenied: the file system failed.
            Timeout: .order stayed held (see :meth:`put_many`).
        """
        return self.put_many((data,), timeout)[0]

    def put_many(
        self, items: Sequence[Buffer], timeout: float | None = None, start: float | None = None
    ) -> list[str]:
        """Add several messages, in order, with one directory sync for all of them.

        The renames into new/ wait for .order, which a consumer holds only while it lists
        new/; a process that keeps it longer (stopped there, or another program) makes this
        wait up to ``timeout`` seconds (None: until it lets go, or this store is closed)
        from ``start`` (``time.monotonic()``; default now).

        Raises:
            Timeout: .order stayed held (naming the holder); nothing was queued.
            ChannelClosed: closed before, or while waiting for .order; nothing was queued.
            ChannelBroken, ResourceExhausted, PermissionDenied: the file system failed.
        """
        start = time.monotonic() if start is None else start
        if not self._put_lock.acquire(blocking=False):
            wait = limit(timeout, self.url)  # (NaN is refused only where there is a wait)
            left = None if wait is None else max(start + wait - time.monotonic(), 0.0)
            if not self._put_lock.acquire(timeout=-1 if left is None else left):
                raise self._order_timeout(
                    timeout, "another send on this channel was still under way (or waiting)"
                )
        try:
            with self._state_lock:
                if self._closing:
                    raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
                self._putting = True
            try:
                return self._put_many(items, timeout, start)
            finally:
                with self._state_lock:
                    self._putting = False
                    if self._closing:
                        self._close_fds()
        finally:
            self._put_lock.release()

    def _share_order(self, timeout: float | None, start: float) -> None:
        """Take .order shared for the renames, without blocking in flock: a holder that never
        lets go must not outlast ``timeout`` (from ``start``, monotonic) nor ``close()``.

        Raises:
            Timeout: still held at the deadline. ChannelClosed: closed meanwhile.
        """
        pause = 0.0001
        deadline: float | None = None
        first = True  # (the deadline is worked out at the first wait)
        while not _locked(self._order_fd, shared=True):
            if self._closing:
                raise ChannelClosed(
                    f"{self.url} was closed while a send waited for its .order lock; nothing "
                    f"of that send was queued",
                    endpoint=self.url,
                )
            if first:
                first = False
                wait = limit(timeout, self.url)
                deadline = None if wait is None else start + wait
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise self._order_timeout(timeout)
            time.sleep(pause if left is None else min(pause, left))
            pause = min(pause * 2, _ORDER_POLL)

    def _order_timeout(self, timeout: float | None, why: str = "") -> Timeout:
        """A send that could not rename its messages into new/ in time."""
        if not why:
            pids = lock_holders(os.path.join(self.path, ".order"))
            who = ", ".join(describe_pid(p) for p in pids) if pids else "another process"
            why = (
                f"{who} holds the spool's .order lock exclusively (a consumer holds it only "
                f"while it lists new/; one stopped there, by SIGSTOP or a debugger, or another "
                f"program keeps it): resume or end that process"
            )
        return Timeout(
            f"send to {self.url} timed out after {timeout} s: {why}; nothing of this send "
            f"was queued (pass a larger timeout= to wait longer)",
            endpoint=self.url,
        )

    def _put_many(self, items: Sequence[Buffer], timeout: float | None, start: float) -> list[str]:
        """put_many with the put lock held and the store open."""
        names = [self._next_name() for _ in items]
        fds: list[int] = []
        visible = 0  # renamed into new/: queued, whatever fails after
        try:
            for name, data in zip(names, items, strict=True):
                fds.append(self._write_tmp(name, data))
            # A batch is synced with one syncfs() where there is one: a flush per file
            # costs milliseconds each (about 100x more for a batch of 100).
            batch_synced = self.fsync and len(fds) > 1 and _syncfs(fds[0])
            while fds:
                fd = fds.pop(0)
                try:
                    if self.fsync and not batch_synced:
                        os.fsync(fd)
                finally:
                    os.close(fd)
            self._share_order(timeout, start)
            try:
                for name in names:
                    os.rename(os.path.join(self.tmp, name), os.path.join(self.new, name))
                    visible += 1
            finally:
                fcntl.flock(self._order_fd, fcntl.LOCK_UN)
            if self.fsync:
                os.fsync(self._new_fd)  # the renames survive a power cut
        except (OSError, IpcwireError) as exc:
            for fd in fds:
                os.close(fd)
            for name in names:
                try:
                    os.unlink(os.path.join(self.tmp, name))
                except OSError:
                    pass
            if isinstance(exc, IpcwireError):  # .order: nothing was renamed
                raise
            raise self._write_error(exc, visible, len(names)) from exc
        return names

    def _write_error(self, exc: OSError, visible: int, total: int) -> IpcwireError:
        """The error for a failed put: a full disk or a file size limit says so and how to
        fix it, and how much of the batch was queued regardless."""
        queued = (
            "nothing of this send was queued"
            if visible == 0
            else f"{visible} of its {total} messages were queued before that"
        )
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return ResourceExhausted(
                f"cannot write to the spool {self.path}: {exc.strerror} ({queued}); free "
                f"space on its file system or raise the quota (consumers free a message's "
                f"space when they acknowledge it)",
                endpoint=self.url,
            )
        if exc.errno == errno.EFBIG:
            return ResourceExhausted(
                f"cannot write to the spool {self.path}: a message file would be over this "
                f"process's file size limit (`ulimit -f`, RLIMIT_FSIZE) or the file "
                f"system's ({queued}); raise the limit or send smaller messages",
                endpoint=self.url,
            )
        return translate(exc, self.url, f"writing to the spool ({queued})")

    # -- consuming --------------------------------------------------------------------------
    def try_claim(self, max_frame: int) -> Claim | None:
        """Claim the oldest available message, or None when there is none now.

        Raises:
            FrameTooLarge: the next message is over ``max_frame``; it was moved to dead/.
        """
        with self._claim_lock:
            for _ in range(2):
                if not self._backlog:
                    self._backlog = self._scan()
                while self._backlog:
                    claim = self._claim(self._backlog.pop(0), max_frame)
                    if claim is not None:
                        return claim
        return None

    def _scan(self) -> list[str]:
        """The names in new/, sorted; empty (and ``order_busy`` set) when a producer kept
        .order for too long to wait here: a stopped producer (SIGSTOP, a debugger) must not
        make the consumer ignore its timeout, nor its close()."""
        try:
            if not self._lock_order():
                self.order_busy = True
                return []
            self.order_busy = False
            try:
                names = os.listdir(self.new)
            finally:
                fcntl.flock(self._order_fd, fcntl.LOCK_UN)
        except OSError as exc:
            raise translate(exc, self.url, "reading the spool") from exc
        if self._unreadable:
            self._unreadable.intersection_update(names)  # forget those gone
            names = [n for n in names if n not in self._unreadable]
        return sorted(names)

    def _lock_order(self) -> bool:
        """Take .order exclusively (no rename into new/ meanwhile), waiting a few ms at most
        for the producers renaming now (microseconds each); False if still held."""
        pause = 0.0001
        for _ in range(8):  # about 25 ms in all
            if _locked(self._order_fd):
                return True
            time.sleep(pause)
            pause *= 2
        return _locked(self._order_fd)

    def _claim(self, name: str, max_frame: int) -> Claim | None:
        src = os.path.join(self.new, name)
        try:
            fd = os.open(src, _CLAIM)
        except FileNotFoundError:
            return None  # another consumer took it
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise self._unreadable_error(name) from exc
            if exc.errno not in (errno.ELOOP, errno.ENXIO):
                raise translate(exc, self.url, f"claiming {src}") from exc
            self._not_a_message(name, "symbolic link" if exc.errno == errno.ELOOP else "socket")
            return None  # another consumer moved it first
        try:
            st = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            raise translate(exc, self.url, f"claiming {src}") from exc
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            self._not_a_message(name, "directory" if stat.S_ISDIR(st.st_mode) else "FIFO or device")
            return None
        try:
            if not _locked(fd):
                os.close(fd)
                return None  # another consumer is claiming it right now
            dst = os.path.join(self.cur, name)
            try:
                os.rename(src, dst)
            except FileNotFoundError:
                os.close(fd)
                return None
            size = st.st_size  # a message file is not written to once in new/
            if size > max_frame:
                self._bury(name, f"{size} bytes, over max_frame={max_frame}")
                os.close(fd)
                raise FrameTooLarge(
                    f"a message of {size} bytes in {self.url} is over max_frame={max_frame}; it "
                    f"was moved to {self.dead}",
                    size=size,
                    limit=max_frame,
                    endpoint=self.url,
                )
            data = _read_all(fd, size)
            os.utime(fd)  # mtime = claim time, for the lease
        except OSError as exc:
            os.close(fd)
            raise ChannelBroken(
                f"{self.url}: cannot read {name} after claiming it: {exc}. It goes back to "
                f"new/ at the next reap (its attempt counted; dead/ past max_attempts); if "
                f"this repeats, check the file system under {self.cur}",
                endpoint=self.url,
            ) from exc
        return Claim(self, name, fd, data, _split(name)[1])

    # -- putting back -----------------------------------------------------------------------
    def requeue(self, name: str, attempt: int) -> None:
        """Move cur/name back into new/ (or dead/ past max_attempts)."""
        base, _ = _split(name)
        if self.max_attempts is not None and attempt >= self.max_attempts:
            self._bury(name, f"{attempt} delivery attempts (max_attempts={self.max_attempts})")
            return
        try:
            os.rename(os.path.join(self.cur, name), os.path.join(self.new, f"{base}.{attempt}"))
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != errno.ENAMETOOLONG:
                raise
            # Not a name ipcwire gives (something else put it in new/): it could never go
            # back, and would stay in cur/ for ever.
            self._bury(name, "its name is too long to count another delivery attempt in")

    def left_in_cur(self, exc: OSError, name: str, doing: str) -> IpcwireError:
        """The error for an ack or release the file system refused (``exc``): the message
        stays in cur/, unlocked once its claim is closed, and a reaper returns it."""
        what = (
            f"{self.url}: {doing} the message cur/{name} failed ({exc.strerror}); it stays in "
            f"cur/ and comes again (a consumer's reaper puts it back)"
        )
        if exc.errno in (errno.EACCES, errno.EPERM):
            return PermissionDenied(
                f"{what}. This user needs write access to {self.cur} and {self.new}",
                endpoint=self.url,
            )
        return ChannelBroken(what, endpoint=self.url)

    def _unreadable_error(self, name: str) -> PermissionDenied:
        """``new/name`` cannot be opened by this process: skip it from now on (a consumer
        that may read it, its owner say, still can) and say why, once."""
        self._unreadable.add(name)
        try:
            st = os.stat(os.path.join(self.new, name))
            what = f"mode {oct(st.st_mode & 0o777)}, owned by uid {st.st_uid} gid {st.st_gid}"
        except OSError:
            what = "gone meanwhile"
        log.warning("ipcwire: %s: cannot read new/%s (%s); skipping it", self.url, name, what)
        return PermissionDenied(
            f"{self.url}: cannot read the message new/{name} ({what}; you are uid "
            f"{os.getuid()}); this consumer skips it from now on. Producers and consumers of "
            f"a shared spool must be in its group and open it with the same mode= (0o770)",
            endpoint=self.url,
        )

    def _not_a_message(self, name: str, kind: str) -> None:
        """``new/name`` is not a message file (something else put it there): move it to dead/
        out of the queue's way.

        Raises:
            RemoteProtocolError: always (None when another consumer moved it first).
        """
        try:
            os.rename(os.path.join(self.new, name), os.path.join(self.dead, name))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise translate(exc, self.url, f"moving new/{name} to dead/") from exc
        log.warning("ipcwire: %s: moved %s to dead/: a %s, not a message", self.url, name, kind)
        raise RemoteProtocolError(
            f"{self.url}: new/{name} is a {kind}, not a message file (something other than "
            f"ipcwire put it there); it was moved to {self.dead}",
            endpoint=self.url,
        )

    def _bury(self, name: str, why: str) -> None:
        try:
            os.rename(os.path.join(self.cur, name), os.path.join(self.dead, name))
            log.warning("ipcwire: %s: moved %s to dead/: %s", self.url, name, why)
        except FileNotFoundError:
            pass

    def reap(self) -> int:
        """Return claims whose consumer is gone (and, with ``lease``, claims held too long);
        remove abandoned temporary files. Returns how many messages went back."""
        returned = 0
        try:
            names = os.listdir(self.cur)
        except OSError:
            return 0
        now = time.time()
        for name in names:
            path = os.path.join(self.cur, name)
            try:
                fd = os.open(path, _CLAIM)
            except OSError as exc:
                if not isinstance(exc, FileNotFoundError):  # not a claim: nothing to return
                    log.info("ipcwire: %s: reaping %s failed: %s", self.url, name, exc)
                continue
            try:
                if _locked(fd):
                    # The consumer died (or just acked: then the rename finds nothing).
                    if os.path.exists(path):
                        self.requeue(name, _split(name)[1] + 1)
                        returned += 1
                elif self.lease is not None and now - os.fstat(fd).st_mtime > self.lease:
                    returned += self._steal(name, fd)
            except OSError as exc:
                log.info("ipcwire: %s: reaping %s failed: %s", self.url, name, exc)
            finally:
                os.close(fd)
        self._reap_tmp(now)
        return returned

    def _steal(self, name: str, fd: int) -> int:
        """Redeliver a claim whose lease expired: a copy, since its holder keeps the lock."""
        base, attempt = _split(name)
        if self.max_attempts is not None and attempt + 1 >= self.max_attempts:
            # the holder's ack then finds it gone and returns False, as for a redelivery
            self._bury(
                name,
                f"held over the lease of {self.lease} s on its last attempt "
                f"(max_attempts={self.max_attempts})",
            )
            return 0
        data = _read_all(fd, os.fstat(fd).st_size)
        new_name = f"{base}.{attempt + 1}"
        fd = self._write_tmp(new_name, data)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.unlink(os.path.join(self.cur, name))
        except FileNotFoundError:
            os.unlink(os.path.join(self.tmp, new_name))  # acked meanwhile: keep it acked
            return 0
        os.rename(os.path.join(self.tmp, new_name), os.path.join(self.new, new_name))
        log.warning(
            "ipcwire: %s: %s was held over the lease of %s s; redelivered",
            self.url,
            name,
            self.lease,
        )
        return 1

    def _reap_tmp(self, now: float) -> None:
        try:
            names = os.listdir(self.tmp)
        except OSError:
            return
        for name in names:
            path = os.path.join(self.tmp, name)
            try:
                if now - os.stat(path).st_mtime < _STALE_TMP:
                    continue
                fd = os.open(path, _READ)
            except OSError:
                continue
            try:
                if not _locked(fd):
                    continue  # being written
                base, attempt = _split(name)
                if attempt > 0 and not os.path.exists(
                    os.path.join(self.cur, f"{base}.{attempt - 1}")
                ):
                    # A lease redelivery's copy (see _steal; producers write attempt 0) whose
                    # reaper died after removing the original: the only copy left, complete
                    # (it was synced and closed before the original went). Deliver it.
                    os.rename(path, os.path.join(self.new, name))
                    log.warning("ipcwire: %s: redelivered %s left in tmp/", self.url, name)
                else:
                    os.unlink(path)  # its writer died before the rename: never visible
            except OSError:
                pass
            finally:
                os.close(fd)

    def counts(self) -> dict[str, int]:
        """Files per state: ``{"new": 3, "cur": 1, "dead": 0, "tmp": 0}``."""
        out = {}
        for d in _SUBDIRS:
            try:
                out[d] = len(os.listdir(os.path.join(self.path, d)))
            except OSError:
                out[d] = 0
        return out

    def close(self) -> None:
        """Release the directory descriptors (at the end of a put under way, if any: it
        completes)."""
        with self._state_lock:
            self._closing = True
            if not self._putting:
                self._close_fds()

    def _close_fds(self) -> None:
        fd, self._new_fd = self._new_fd, -1
        if fd >= 0:
            os.close(fd)
        fd, self._order_fd = self._order_fd, -1
        if fd >= 0:
            os.close(fd)


_libc: Any = None


def _syncfs(fd: int) -> bool:
    """Flush the whole file system holding ``fd`` (Linux ``syncfs``); False if unavailable."""
    global _libc
    if not sys.platform.startswith("linux"):
        return False
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.syncfs.argtypes = [ctypes.c_int]
        except (OSError, AttributeError):
            _libc = False
    if not _libc:
        return False
    if _libc.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return True


def _read_all(fd: int, size: int) -> bytes:
    data = os.pread(fd, size, 0)
    if len(data) == size:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)

"""The spool on disk: a crash-proof queue of files in a directory. No waiting here.

This module holds :class:`SpoolStore`: the directory (made with its mode, or refused with
the fix), its producers (write to tmp/, sync, rename into new/ under .order shared) and its
close. What a consumer does (claim, put back, reap) is its base class in
:mod:`ipcwire.spool._consume`; file primitives both use are in :mod:`ipcwire.spool._files`.

Layout (maildir-like)::

    dir/tmp/   a producer writes here, fsyncs, then renames into new/ (readers never see a
               half-written message); it holds an flock on the file until the rename.
               tmp/~NAME is a lease redelivery's original, out of cur/ (see Consuming._steal)
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

import errno
import fcntl
import os
import secrets
import stat
import threading
import time
from collections.abc import Sequence
from typing import Final

from ipcwire._deadline import limit
from ipcwire._oserror import translate
from ipcwire._procfs import describe_pid
from ipcwire.errors import (
    ChannelClosed,
    ConfigurationError,
    IpcwireError,
    PermissionDenied,
    ResourceExhausted,
    Timeout,
)
from ipcwire.spool._consume import Consuming
from ipcwire.spool._files import Buffer, _locked, _syncfs
from ipcwire.spool._flock import lock_holders

__all__ = ["SpoolStore"]

_SUBDIRS: Final = ("tmp", "new", "cur", "dead")
_ORDER_POLL: Final = 0.01  # longest pause between a producer's tries for a held .order


class SpoolStore(Consuming):
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
        if lease is not None and not lease > 0:  # (NaN too: it never expired)
            raise ConfigurationError(
                f"lease={lease!r} for {url} must be positive seconds (or None)", endpoint=url
            )
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
        # O_NONBLOCK: a FIFO put there by something else must not hang the open (for a
        # regular file it changes nothing)
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            try:
                fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, self._file_mode)
            except FileExistsError:
                fd = os.open(path, flags)
                kind = os.fstat(fd).st_mode
                if not stat.S_ISREG(kind):
                    os.close(fd)
                    what = "directory" if stat.S_ISDIR(kind) else "FIFO, socket or device"
                    raise PermissionDenied(
                        f"will not use the spool {self.path}: {path} is a {what}, not the "
                        f"spool's lock file (something other than ipcwire made it); remove "
                        f"it, and ipcwire makes the file again",
                        endpoint=self.url,
                    ) from None
                return fd
            os.fchmod(fd, self._file_mode)  # whatever the umask
            return fd
        except PermissionDenied:
            raise  # (the one above: a PermissionError too)
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
                    self._check_existing(d, mode)
                    continue
                os.chmod(d, mode)  # exactly mode= (mkdir's mode is cut by the umask)
            usable = os.access(self.new, os.R_OK | os.W_OK | os.X_OK)
        except PermissionDenied:
            raise  # (_check_existing's: a PermissionError too)
        except PermissionError as exc:
            raise self._denied() from exc
        except OSError as exc:
            raise translate(exc, self.url, "creating the spool") from exc
        if not usable:
            raise self._denied()

    def _check_existing(self, d: str, mode: int) -> None:
        """A directory of the spool that was there already: whoever may write it may add
        messages, so it is used only when that is who ``mode=`` lets in. Never through a
        symbolic link (another user could point the spool into a tree of theirs); owned by
        another user only when its group is one of this process's and ``mode=`` shares the
        spool with the group (the shared spool of mode=0o770); never writable by every user
        unless ``mode=`` says so.

        Raises:
            PermissionDenied: it is not such a directory; the message names owner and fix.
        """
        st = os.lstat(d)
        why = None
        if stat.S_ISLNK(st.st_mode):
            why = "is a symbolic link (a spool's directories are never followed through one)"
        elif not stat.S_ISDIR(st.st_mode):
            why = "is not a directory"
        elif st.st_mode & 0o002 and not mode & 0o002:
            why = f"is mode {oct(st.st_mode & 0o7777)}: every user may add messages to it"
        elif st.st_uid != os.geteuid() and not (
            mode & 0o070 and st.st_gid in {os.getegid(), *os.getgroups()}
        ):
            why = (
                f"is mode {oct(st.st_mode & 0o7777)} and belongs to uid {st.st_uid} (group "
                f"{st.st_gid}); you are uid {os.geteuid()}, and mode={oct(mode)} does not share "
                f"the spool with a group of yours"
            )
        if why is not None:
            raise PermissionDenied(
                f"will not use the spool {self.path}: {d} {why}; whoever may write it may add "
                f"messages. Use a spool directory of your own, or share one on purpose: "
                f"mode=0o770 on every side and a group you are in (chgrp, chmod -R g+rwX, "
                f"o-rwx)",
                endpoint=self.url,
            )

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
            why = (
                f"{self.order_holder()} holds the spool's .order lock exclusively (a consumer "
                f"holds it only while it lists new/; one stopped there, by SIGSTOP or a "
                f"debugger, or another program keeps it): resume or end that process"
            )
        return Timeout(
            f"send to {self.url} timed out after {timeout} s: {why}; nothing of this send "
            f"was queued (pass a larger timeout= to wait longer)",
            endpoint=self.url,
        )

    def order_holder(self) -> str:
        """Who holds .order now: ``pid 12 (python worker.py)`` (from /proc/locks), or
        "another process" where that cannot be read."""
        pids = lock_holders(os.path.join(self.path, ".order"))
        return ", ".join(describe_pid(p) for p in pids) if pids else "another process"

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
            if self.fsync and not batch_synced:
                for fd in fds:
                    os.fsync(fd)
            # The files stay open, and locked, while this waits for .order: a reaper removes
            # an unlocked file in tmp/ once it is a minute old (see _reap_tmp), and a send
            # that waited that long for a stopped consumer lost its messages to it (and
            # failed with ChannelBroken). Closed before the renames, so that a consumer never
            # finds a new message locked.
            self._share_order(timeout, start)
            try:
                while fds:
                    os.close(fds.pop())
                for name in names:
                    os.rename(os.path.join(self.tmp, name), os.path.join(self.new, name))
                    visible += 1
            finally:
                fcntl.flock(self._order_fd, fcntl.LOCK_UN)
            if self.fsync:
                os.fsync(self._new_fd)  # the renames survive a power cut
        except BaseException as exc:  # (Ctrl-C in the wait for .order too: the files are open)
            for fd in fds:
                os.close(fd)
            for name in names:
                try:
                    os.unlink(os.path.join(self.tmp, name))
                except OSError:
                    pass
            if not isinstance(exc, OSError) or isinstance(exc, IpcwireError):
                raise  # (.order: nothing was renamed)
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

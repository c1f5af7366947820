"""The consuming side of a spool: a claimed message (:class:`Claim`) and what a consumer does
to the directory (:class:`Consuming`): claim the oldest message in new/ (renamed into cur/
under its flock), put it back or move it to dead/, and reap claims whose consumer is gone or
whose lease expired, and abandoned files in tmp/.

Separate from :mod:`ipcwire.spool._store`, whose :class:`~ipcwire.spool._store.SpoolStore`
(the directory, its setup and its producers) takes these methods as its base class; the
layout they work on is described there.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from ipcwire._oserror import translate
from ipcwire.errors import (
    ChannelBroken,
    FrameTooLarge,
    IpcwireError,
    PermissionDenied,
    RemoteProtocolError,
)
from ipcwire.spool._files import _CLAIM, Buffer, _locked, _read_all, _split

__all__ = ["Claim", "Consuming"]

log = logging.getLogger("ipcwire")

_STALE_TMP: Final = 60.0  # seconds before an unlocked file in tmp/ counts as abandoned
# tmp/~NAME: the original of a lease redelivery, moved out of cur/ once its copy is complete
_STOLEN: Final = "~"


def _touch(fd: int) -> bool:
    """Set the file's mtime to now; False if the file system refused."""
    try:
        os.utime(fd)
    except OSError:
        return False
    return True


def _producer_gone(name: str) -> bool:
    """Whether the producer that is writing tmp/``name`` is no process here any more, so that
    its half-written file need not wait ``_STALE_TMP`` (a killed producer's 23 MB file stayed
    a minute). Only a producer's own file says who writes it (``TS.PID-RAND.SEQ.0``); a lease
    redelivery's copy keeps its producer's name. The flock is still checked after: it is what
    tells a file being written, also by a process of another host sharing the spool."""
    parts = name.split(".")
    if len(parts) != 4 or parts[3] != "0":
        return False
    pid = parts[1].partition("-")[0]
    if not (pid.isascii() and pid.isdigit()) or not 0 < int(pid) < 2**31:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


@dataclass(eq=False)
class Claim:
    """A message claimed by this process: ``data`` is its payload. Ack or release it once.

    ``ack()``, ``release()`` and ``bury()`` may be called from several threads at once (the
    consumer acks while ``close()`` releases what is unfinished): exactly one of them acts,
    and only that one closes ``fd``. The others return at once (a second ``ack()`` once the
    first has its answer).
    """

    store: Consuming
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
                    "%s: message %s was redelivered before its ack (lease expired)",
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


class Consuming:
    """The consumer's methods of :class:`~ipcwire.spool._store.SpoolStore` (its base class),
    which sets the attributes declared here."""

    url: str
    tmp: str
    new: str
    cur: str
    dead: str
    lease: float | None
    max_attempts: int | None
    order_busy: bool
    _order_fd: int
    _claim_lock: threading.Lock
    _backlog: list[str]
    _unreadable: set[str]
    _write_tmp: Callable[[str, Buffer], int]

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
            # mtime = claim time, for the lease, before the rename: in cur/ with the time it
            # was sent, a message that waited longer than the lease looked held that long,
            # and a reaper redelivered it while this consumer was still reading it
            touched = _touch(fd)
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
            if not touched:
                os.utime(fd)  # (raises what refused it before the rename)
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
        log.warning("%s: cannot read new/%s (%s); skipping it", self.url, name, what)
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
        log.warning("%s: moved %s to dead/: a %s, not a message", self.url, name, kind)
        raise RemoteProtocolError(
            f"{self.url}: new/{name} is a {kind}, not a message file (something other than "
            f"ipcwire put it there); it was moved to {self.dead}",
            endpoint=self.url,
        )

    def _bury(self, name: str, why: str) -> None:
        try:
            os.rename(os.path.join(self.cur, name), os.path.join(self.dead, name))
            log.warning("%s: moved %s to dead/: %s", self.url, name, why)
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
                    log.info("%s: reaping %s failed: %s", self.url, name, exc)
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
                log.info("%s: reaping %s failed: %s", self.url, name, exc)
            finally:
                os.close(fd)
        self._reap_tmp(now)
        return returned

    def _steal(self, name: str, fd: int) -> int:
        """Redeliver a claim whose lease expired: a copy, since its holder keeps the lock.

        The copy is written to tmp/ and synced, and stays locked (a reaper leaves it) until
        the original leaves cur/ for ``tmp/~NAME``: that rename decides between this
        redelivery and the holder's ``ack()`` (which then finds nothing, and says False),
        and the mark it leaves is what tells a reaper, should this process die before the
        copy is in new/, that the copy is complete and is to be delivered (see
        :meth:`_reap_tmp`). Before, a reaper delivered any copy whose original was gone
        from cur/: also one cut short by its writer's death and whose original had been
        acked (half a message, after an ack that said True).
        """
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
        copy = os.path.join(self.tmp, f"{base}.{attempt + 1}")
        cfd = self._write_tmp(f"{base}.{attempt + 1}", data)
        try:
            try:
                os.fsync(cfd)
                os.rename(os.path.join(self.cur, name), os.path.join(self.tmp, _STOLEN + name))
            except BaseException as exc:
                os.unlink(copy)  # not redelivered: the original is still in cur/, or acked
                if isinstance(exc, FileNotFoundError):
                    return 0  # acked meanwhile: keep it acked
                raise
        finally:
            os.close(cfd)
        self._finish_steal(name)
        log.warning(
            "%s: %s was held over the lease of %s s; redelivered",
            self.url,
            name,
            self.lease,
        )
        return 1

    def _finish_steal(self, name: str) -> None:
        """The end of a lease redelivery of ``name`` whose original went to ``tmp/~name``
        (by this process or by one that died since): its copy into new/, then the mark
        away. Either may have been done already."""
        base, attempt = _split(name)
        copy = f"{base}.{attempt + 1}"
        try:
            os.rename(os.path.join(self.tmp, copy), os.path.join(self.new, copy))
        except FileNotFoundError:
            pass
        try:
            os.unlink(os.path.join(self.tmp, _STOLEN + name))
        except FileNotFoundError:
            pass

    def _reap_tmp(self, now: float) -> None:
        try:
            names = os.listdir(self.tmp)
        except OSError:
            return
        for name in names:
            path = os.path.join(self.tmp, name)
            if name.startswith(_STOLEN):
                # A lease redelivery whose reaper died after the original left cur/: its
                # copy is complete (synced before that). Deliver it.
                try:
                    self._finish_steal(name[len(_STOLEN) :])
                    log.warning("%s: redelivered %s left in tmp/", self.url, name)
                except OSError:
                    pass
                continue
            try:
                if now - os.lstat(path).st_mtime < _STALE_TMP and not _producer_gone(name):
                    continue
                # O_NONBLOCK: a FIFO put here by something else must not hang the reaper
                # (and with it the recv that reaps, its timeout and close())
                fd = os.open(path, _CLAIM)
            except OSError:
                continue
            try:
                if not _locked(fd):
                    continue  # being written
                base, attempt = _split(name)
                if attempt > 0 and os.path.lexists(
                    os.path.join(self.tmp, f"{_STOLEN}{base}.{attempt - 1}")
                ):
                    self._finish_steal(f"{base}.{attempt - 1}")  # (see above)
                else:
                    # its writer died before the rename: never visible (a lease copy's
                    # original is still in cur/, or was acked)
                    os.unlink(path)
            except OSError:
                pass
            finally:
                os.close(fd)

"""Child processes: exit status in words, process-group bookkeeping, the shutdown ladder.

The ladder (blocking here; :mod:`ipcwire.spawn.aio` runs the same steps with ``await``):

1. the caller closes the child's stdin (the polite request to exit);
2. wait up to ``exit_timeout`` for the child to exit, reading and discarding its stdout so a
   child busy writing a last reply is not stuck on a full pipe;
3. SIGTERM the child's process group, wait up to ``term_timeout``;
4. SIGKILL the group, wait up to ``kill_timeout``;
5. reap the child.

"The group is gone" means the child has exited *and* no other live process remains in its
process group (a grandchild that inherited the pipes). The child is reaped only at the end, so
while the ladder runs its pid, and therefore the group id, cannot be reused by an unrelated
process. A process that left the group (``setsid``) escapes: use a cgroup or a container for
hostile children.

:func:`run_ladders` runs the ladder for many children at once, in one thread: every wait is
shared (one ``poll`` on all their pidfds and stdout pipes), and children with the same waits
take each step in the same round. :func:`run_ladder` is that for one child. At interpreter
exit, the children whose channels were never closed (blocking and asyncio alike) go through
one such run, with each wait capped at :data:`EXIT_CAP`: the stdin of every one is closed,
then one wait, one round of SIGTERM, one wait, one round of SIGKILL, one wait. Exit takes
the time of one ladder, not one per child, and starts no thread (Python 3.12+ refuses new
threads during interpreter shutdown).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

from ipcwire._poll import poll_ms, wait_readable

__all__ = [
    "ChildWatch",
    "LadderChild",
    "LadderTimeouts",
    "Lines",
    "describe_status",
    "exit_timeouts",
    "group_members",
    "kill_group",
    "members_of",
    "run_ladder",
    "run_ladders",
    "shut_down_at_exit",
    "wait_readable",
]

log = logging.getLogger("ipcwire")

_PROC: Final = Path("/proc")
_HAS_PROC: Final = sys.platform.startswith("linux") and (_PROC / "self" / "stat").exists()
_SLICE: Final = 0.02  # polling step where no pidfd exists (macOS)


def describe_status(returncode: int) -> str:
    """``exited with code 3`` / ``was killed by signal SIGKILL (9)``."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"was killed by {name} ({-returncode})"


def _pidfd(pid: int) -> int | None:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        fd: int = opener(pid)
    except OSError:
        return None
    return fd


_unreaped: set[ChildWatch] = set()  # watches of children not reaped yet (see ChildWatch)


class ChildWatch:
    """Knows whether the child exited, without reaping it (pidfd, or ``waitid(WNOWAIT)``)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.pidfd = _pidfd(proc.pid)
        self._status: int | None = None
        # Until reaped, held here: a channel dropped without close() is collected without its
        # Popen, whose own finalizer would warn "still running" and hand it to subprocess's
        # reaping while the dropped channel's ladder runs (ipcwire.spawn._dropped).
        _unreaped.add(self)

    def exited(self) -> bool:
        """True once the child has exited (it may still be an unreaped zombie)."""
        if self._status is not None or self.proc.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return self.proc.poll() is not None  # reaped elsewhere
        except OSError:
            return False
        if info is None:
            return False
        if info.si_code == os.CLD_EXITED:
            self._status = info.si_status
        else:
            self._status = -info.si_status
        return True

    @property
    def status(self) -> int | None:
        """The exit status (negative: killed by that signal), once exited."""
        if self.proc.returncode is not None:
            return self.proc.returncode
        if self.exited():
            return self._status
        return None

    def wait_exited(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the child to exit (without reaping)."""
        deadline = time.monotonic() + timeout
        while not self.exited():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.pidfd is not None:
                wait_readable(self.pidfd, left)
            else:  # pragma: no cover - no pidfd
                time.sleep(min(_SLICE, left))
        return True

    def reap(self, timeout: float, *, background: bool = True) -> int | None:
        """Reap the child; if it does not die in time, hand it to a background reaper (or,
        with ``background=False``, at interpreter exit, leave it to init)."""
        try:
            status = self.proc.wait(timeout=timeout)
            _unreaped.discard(self)
            return status
        except subprocess.TimeoutExpired:
            log.warning(
                "child pid %d did not die within %.1f s of SIGKILL (uninterruptible "
                "sleep?); it will be reaped %s",
                self.pid,
                timeout,
                "in the background" if background else "by init once this process exits",
            )
            if background:
                reaper = threading.Thread(target=self.proc.wait, daemon=True, name="ipcwire reaper")
                # Python 3.12+ refuses threads once the interpreter is exiting (a close() in an
                # atexit handler of the program's): then init reaps it, after this process.
                with contextlib.suppress(RuntimeError):
                    reaper.start()
            return None

    def close(self) -> None:
        if self.pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self.pidfd)
            self.pidfd = None
        if self.proc.returncode is not None:
            _unreaped.discard(self)

    def reopen(self) -> None:
        """Watch again after :meth:`close` (a ladder taken up again). Only while the child is
        not reaped: until then its pid cannot belong to another process."""
        if self.pidfd is None and self.proc.returncode is None:
            self.pidfd = _pidfd(self.pid)


def _stat_fields(pid: str) -> tuple[str, int] | None:
    try:
        raw = (_PROC / pid / "stat").read_bytes()
    except OSError:
        return None
    rest = raw[raw.rfind(b")") + 2 :].split()
    if len(rest) < 3:
        return None
    return rest[0].decode(), int(rest[2])  # state, pgrp


def group_members(pgid: int, *, exclude: int | None = None) -> list[int] | None:
    """Live (not zombie) processes in process group ``pgid``; None where /proc cannot say."""
    if not _HAS_PROC:
        return None
    found = []
    for entry in os.listdir(_PROC):
        if not entry.isdigit() or int(entry) == exclude:
            continue
        fields = _stat_fields(entry)
        if fields is not None and fields[1] == pgid and fields[0] not in ("Z", "X"):
            found.append(int(entry))
    return found


def kill_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the group; False if it is empty or not ours to signal."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class LadderTimeouts:
    """The waits of the shutdown ladder, in seconds."""

    __slots__ = ("exit", "kill", "term")

    def __init__(self, exit: float = 2.0, term: float = 2.0, kill: float = 2.0) -> None:
        for name, value in (("exit_timeout", exit), ("term_timeout", term)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, not {value}")
        self.exit = exit
        self.term = term
        self.kill = kill

    @property
    def bound(self) -> float:
        """The longest close() can take."""
        return self.exit + self.term + self.kill


class Lines(Protocol):
    """Where a drained stderr goes (:class:`ipcwire.spawn._stderr.LineSplitter`)."""

    def feed(self, data: bytes) -> None: ...

    def finish(self) -> None: ...


class _Drain:
    """Reads the child's stdout (discarded) or stderr (to its lines) while the ladder waits."""

    def __init__(self, fd: int | None, lines: Lines | None = None) -> None:
        self.fd = fd
        self.lines = lines
        self._buf = bytearray(65536)

    def pump(self) -> None:
        if self.fd is None:
            return
        try:
            n = os.readv(self.fd, (self._buf,))
        except BlockingIOError:
            return
        except OSError:
            n = 0
        if n == 0:
            self.close()
        elif self.lines is not None:
            self.lines.feed(bytes(self._buf[:n]))

    def close(self) -> None:
        if self.fd is not None:
            if self.lines is not None:
                self._rest(self.fd, self.lines)
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
        lines, self.lines = self.lines, None
        if lines is not None:
            lines.finish()

    def _rest(self, fd: int, lines: Lines) -> None:
        """Lines: what is still in the pipe (a child that wrote, then exited before the ladder
        read it), bounded: a grandchild that never stops writing does not keep us here."""
        with contextlib.suppress(OSError):
            os.set_blocking(fd, False)
            for _ in range(16):
                n = os.readv(fd, (self._buf,))
                if n == 0:
                    break
                lines.feed(bytes(self._buf[:n]))


class LadderChild:
    """One child for :func:`run_ladders`: its watch, the read end of its stdout to drain
    (taken over and closed), its waits, and where the ladder stands. ``stderr``: the read end
    of its stderr and where the lines go, when nothing else reads it (asyncio, at exit)."""

    def __init__(
        self,
        watch: ChildWatch,
        drain_fd: int | None,
        timeouts: LadderTimeouts,
        *,
        stderr: tuple[int, Lines] | None = None,
    ) -> None:
        self.watch = watch
        self.pgid = watch.pid  # the child leads its own group (process_group=0)
        self.drains = [_Drain(drain_fd)]
        if stderr is not None:
            self.drains.append(_Drain(*stderr))
        self.timeouts = timeouts
        self.step = 0  # 0: stdin closed, 1: SIGTERM sent, 2: SIGKILL sent
        self.deadline = 0.0
        self.gone = False
        self.status: int | None = None
        self.on_done: Callable[[], None] | None = None  # called once the ladder is over

    def advance(self, now: float) -> bool:
        """The wait of this step ran out: take the next step. False after the last one."""
        if self.step == 0:
            kill_group(self.pgid, signal.SIGTERM)
            self.step, self.deadline = 1, now + self.timeouts.term
            return True
        if self.step == 1:
            log.info("child pid %d ignored SIGTERM; sending SIGKILL", self.pgid)
            kill_group(self.pgid, signal.SIGKILL)
            self.step, self.deadline = 2, now + self.timeouts.kill
            return True
        return False

    def kill_now(self, now: float) -> None:
        """Ctrl-C at interpreter exit: skip to SIGKILL (step 4)."""
        if not self.gone and self.step < 2:
            kill_group(self.pgid, signal.SIGKILL)
            self.step, self.deadline = 2, now + self.timeouts.kill

    def release(self) -> None:
        for drain in self.drains:
            drain.close()
        self.watch.close()


def members_of(pgids: Sequence[int], since: float) -> dict[int, list[int]] | None:
    """Live (not zombie) processes of each group in ``pgids``, the leaders excluded, from a
    pass over /proc begun at ``since`` (``time.monotonic()``) or later. None where /proc
    cannot say.

    The caller passes the moment before it saw its child exit: a pass begun earlier may
    predate a grandchild the child started, and would call the group empty. A pass reads
    every process's stat (a few ms with a thousand processes), and every ladder asks at each
    step: 300 threads of timed-out requests made a pass each, over and over (7.8 s to shut
    down what takes 2.5 s; helper-87). So a pass serves every thread whose moment it
    follows; threads waiting for the one under way mostly take the next, together."""
    if not _HAS_PROC:
        return None
    return _scans.members(pgids, since)


class _GroupScans:
    """The last pass over /proc (every group's members), shared by every ladder."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._began = float("-inf")
        self._groups: dict[int, list[int]] = {}

    def members(self, pgids: Sequence[int], since: float) -> dict[int, list[int]]:
        with self._lock:
            if self._began < since:
                began = time.monotonic()
                self._groups = _scan()
                self._began = began
            return {g: list(self._groups.get(g, ())) for g in pgids}


def _scan() -> dict[int, list[int]]:
    """One pass over /proc: the live members of every process group, leaders excluded."""
    found: dict[int, list[int]] = {}
    for entry in os.listdir(_PROC):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if fields is None or fields[0] in ("Z", "X") or int(entry) == fields[1]:
            continue
        found.setdefault(fields[1], []).append(int(entry))
    return found


_scans = _GroupScans()


def _wait_groups_gone(pending: list[LadderChild]) -> None:
    """Run the waits and steps 3-4 for all of ``pending`` at once, until each group is gone
    or its SIGKILL wait ran out. One poll serves every child: their pidfds, the pidfds of
    processes left in their groups, and the stdout pipes being drained."""
    while pending:
        looked = time.monotonic()  # (a pass from before this would miss late members)
        exited = {c for c in pending if c.watch.exited()}
        members = members_of([c.pgid for c in exited], looked) if exited else {}
        now = time.monotonic()
        waiting: list[LadderChild] = []
        left_in_group: list[int] = []
        for c in pending:
            if c in exited:  # (not exited() again: one that exits now has had no scan)
                if members is None:  # pragma: no cover - no /proc: probe the group
                    rest = [c.pgid] if _group_alive_probe(c.pgid, c.watch) else []
                else:
                    rest = members.get(c.pgid, [])
                if not rest:
                    c.gone = True
                    continue
                left_in_group.extend(rest)
            if now >= c.deadline and not c.advance(now):
                continue  # SIGKILL did not end the group in time: give up waiting
            waiting.append(c)
        pending = waiting
        if not pending:
            return
        timeout = max(0.0, min(c.deadline for c in pending) - now)
        if left_in_group:
            timeout = min(timeout, 0.5)  # re-scan now and then: a member may fork while we wait
        _poll_once(pending, exited, left_in_group, timeout)


def _poll_once(
    pending: list[LadderChild], exited: set[LadderChild], others: list[int], timeout: float
) -> None:
    """Wait until a child or another group member exits, or a stdout to drain is readable
    (or ``timeout``); drain what is readable. poll(), not select(): no limit on fd numbers.
    ``exited``: the children the caller found exited (their pidfds stay readable: not
    watched; their groups' members are, in ``others``)."""
    poller = select.poll()
    drains: dict[int, _Drain] = {}
    polling_exits = False
    for c in pending:
        for drain in c.drains:
            if drain.fd is not None:
                drains[drain.fd] = drain
                poller.register(drain.fd, select.POLLIN)
        if c.watch.pidfd is None:
            polling_exits = True
        elif c not in exited:
            # (its pidfd is readable at once if it has exited since the caller looked: else,
            # with its stdout already at end, nothing here would wake before the timeout)
            poller.register(c.watch.pidfd, select.POLLIN)
    if polling_exits:  # pragma: no cover - no pidfd: poll
        timeout = min(timeout, _SLICE)
    with _pidfds(others) as fds:
        for fd in fds:
            poller.register(fd, select.POLLIN)
        for fd, _ in poller.poll(poll_ms(timeout)):  # (the caller loops)
            ready = drains.get(fd)
            if ready is not None:
                ready.pump()


@contextlib.contextmanager
def _pidfds(pids: list[int]) -> Iterator[list[int]]:
    fds = [fd for fd in (_pidfd(p) for p in pids) if fd is not None]
    try:
        yield fds
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def _group_alive_probe(pgid: int, watch: ChildWatch) -> bool:  # pragma: no cover - non-Linux
    # Without /proc the unreaped leader keeps kill(-pgid, 0) succeeding; assume others remain
    # only if the leader is not the sole member we know of.
    return kill_group(pgid, 0) and not watch.exited()


def run_ladders(children: Sequence[LadderChild], *, at_exit: bool = False) -> None:
    """Steps 2-5 of the ladder for several children at once (the caller has closed their
    stdin): each wait is shared, so the whole takes at most the longest of their
    ``timeouts.bound`` (plus the reaping), not the sum. A child's exit status ends up in its
    ``status`` (None if it could not be reaped in time).

    With ``at_exit`` (interpreter shutdown) no thread is started: a child that SIGKILL did not
    end in time is left to init rather than to a background reaper.
    """
    try:
        now = time.monotonic()
        for c in children:
            c.step, c.deadline = 0, now + c.timeouts.exit
            if at_exit and _hurried:  # Ctrl-C came before the ladder began
                c.kill_now(now)
        _wait_groups_gone(list(children))
        # Reap: a child that exited is reaped at once; one that SIGKILL has not ended yet
        # (uninterruptible sleep) gets a last wait, shared like the others.
        now = time.monotonic()
        last = now + max((c.timeouts.kill for c in children), default=0.0)
        for c in children:
            own = 0.5 if c.watch.exited() else c.timeouts.kill
            left = max(0.0, min(now + own, last) - time.monotonic())
            c.status = c.watch.reap(timeout=left, background=not at_exit)
    finally:
        for c in children:
            c.release()
        for c in children:
            if c.on_done is not None:
                try:
                    c.on_done()
                except Exception:  # pragma: no cover - finish the others
                    log.exception("finishing the shutdown of pid %d failed", c.pgid)


def run_ladder(
    watch: ChildWatch,
    drain_fd: int | None,
    timeouts: LadderTimeouts,
) -> int | None:
    """Steps 2-5 of the ladder for one child (the caller has closed its stdin). Returns the
    child's exit status (None if it could not be reaped in time). Takes at most
    ``timeouts.bound`` seconds."""
    child = LadderChild(watch, drain_fd, timeouts)
    run_ladders([child])
    return child.status


# -- interpreter exit -------------------------------------------------------------------------
ExitSource = Callable[[], list[LadderChild]]
_exit_sources: list[ExitSource] = []
_exit_afters: list[Callable[[], None]] = []
_last_sources: list[ExitSource] = []
EXIT_CAP: Final = 1.0  # each wait of the ladder at interpreter exit, at most (seconds)
_exiting: list[LadderChild] = []  # the children of the exit's ladder, for Ctrl-C
_hurried = False  # Ctrl-C came during the exit's ladder
_exit_started = False  # the shutdown at interpreter exit has begun


def exit_started() -> bool:
    """True once the shutdown at interpreter exit has begun."""
    return _exit_started


def shut_down_at_exit(
    source: ExitSource, after: Callable[[], None] | None = None, *, last: bool = False
) -> None:
    """Register ``source``: at interpreter exit it closes the stdin of its children still
    running and returns them; every source's children then go through one shared ladder.
    ``after`` runs once that ladder is over (to wait for ladders other threads run).
    ``last``: asked after the others (the children of channels collected meanwhile)."""
    (_last_sources if last else _exit_sources).append(source)
    if after is not None:
        _exit_afters.append(after)


def exit_timeouts(timeouts: LadderTimeouts) -> LadderTimeouts:
    """A child's waits, capped for interpreter exit."""
    return LadderTimeouts(
        min(timeouts.exit, EXIT_CAP), min(timeouts.term, EXIT_CAP), min(timeouts.kill, 2.0)
    )


def _on_sigint_at_exit(signum: int, frame: object) -> None:
    """Ctrl-C during the exit's ladder: SIGKILL every group left at once, and the ladder ends
    as soon as they are dead. (A KeyboardInterrupt would stop it half-way, and leave running
    the children not dead yet: Ctrl-C reaches only this process, they lead their own groups.)"""
    global _hurried
    _hurried = True
    now = time.monotonic()
    for c in list(_exiting):
        c.kill_now(now)


def _catch_sigint() -> Any:
    """Install :func:`_on_sigint_at_exit` in place of Python's default SIGINT handler (not in
    place of one the program set); the handler it replaced, or None."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return None
        return signal.signal(signal.SIGINT, _on_sigint_at_exit)
    except (ValueError, OSError):  # pragma: no cover - no signals here
        return None


@atexit.register
def _shut_down_children() -> None:
    """At interpreter exit: the ladder for every child whose channel was never closed, all of
    them together (the stdin of each closed first, then one wait, then one SIGTERM round...)."""
    global _exit_started
    _exit_started = True
    previous = _catch_sigint()
    try:
        children: list[LadderChild] = []
        # Channels dropped without close() and not collected yet are collected now, before
        # the sources are asked, so that each is handed to the last source, not to a thread
        # that the end of the interpreter would stop half-way (ipcwire.spawn._dropped).
        gc.collect()
        for source in _exit_sources + _last_sources:
            try:
                children.extend(source())
            except Exception:  # pragma: no cover - keep shutting down the others
                log.exception("preparing children for shutdown at exit failed")
        seen: set[int] = set()
        unique = []
        for c in children:
            if c.pgid in seen:
                c.release()
            else:
                seen.add(c.pgid)
                unique.append(c)
        _exiting[:] = unique
        if unique:
            run_ladders(unique, at_exit=True)
    finally:
        _exiting.clear()
        if previous is not None:
            with contextlib.suppress(ValueError, OSError):
                signal.signal(signal.SIGINT, previous)
    for after in _exit_afters:
        try:
            after()
        except Exception:  # pragma: no cover
            log.exception("finishing the shutdown at exit failed")

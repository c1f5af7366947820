"""``ipcwire.aio.spawn()`` and the asyncio ``stdio()``: the blocking API's behaviour, natively.

The child's pipes are driven by the event loop (no threads): its stdout feeds the channel's
decoder, its stderr a line sink, its pidfd tells the moment it exits. ``aclose()`` runs the
same shutdown ladder as the blocking :meth:`~ipcwire.spawn.SpawnChannel.close`, with
``await`` instead of blocking waits. Unlike ``asyncio.create_subprocess_exec``, nothing here
waits for pipe EOF to learn that the child exited, so a grandchild holding the pipes cannot
hang the parent. A channel dropped without ``aclose()`` is shut down when the garbage collector
takes it, as the blocking one is (but while its child is alive and its stdout open, the
event loop's reader on that pipe keeps it from being collected: until the loop closes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import warnings
import weakref
from collections.abc import Sequence
from typing import Any

from ipcwire._core.codecs import Codec
from ipcwire.aio._timeouts import within
from ipcwire.channel import PeerInfo
from ipcwire.errors import ChannelBroken, EndOfChannel, IpcwireError
from ipcwire.pipe._aio_channel import AioPipeChannel
from ipcwire.pipe._aio_fd import FdTransport
from ipcwire.pipe._channel import DEFAULT_MAX_READAHEAD
from ipcwire.pipe.aio import open_aio_channel
from ipcwire.spawn._common import (
    Arg,
    Env,
    build_options,
    describe_argv,
    signal_child,
    start_child,
    with_url,
)
from ipcwire.spawn._dropped import hand_over, start_reaper
from ipcwire.spawn._process import (
    ChildWatch,
    LadderChild,
    LadderTimeouts,
    describe_status,
    exit_timeouts,
    kill_group,
    members_of,
    run_ladders,
    shut_down_at_exit,
)
from ipcwire.spawn._stderr import LineSplitter, plan_stderr
from ipcwire.spawn._stdio import claim_stdio, watch_parent

__all__ = ["AioSpawnChannel", "spawn", "stdio", "stdio_channel"]


async def spawn(
    argv: Sequence[Arg],
    *,
    codec: str | Codec | None = None,
    framing: str | None = None,
    max_frame: int | None = None,
    token: str | bytes | None = None,
    env: Env | None = None,
    cwd: Arg | None = None,
    stderr: Any = None,
    pass_fds: Sequence[int] = (),
    exit_timeout: float = 2.0,
    term_timeout: float = 2.0,
    max_readahead: int = DEFAULT_MAX_READAHEAD,
    handshake_timeout: float | None = None,
) -> AioSpawnChannel:
    """Start ``argv``; return an asyncio channel over its stdin/stdout. Options, defaults and
    errors as :func:`ipcwire.spawn` (a ``stderr`` callable is called from the event loop).

    Raises:
        ConfigurationError, ChannelBroken, PermissionDenied, ResourceExhausted,
        AuthenticationFailed, HandshakeError, Timeout: as :func:`ipcwire.spawn`.
    """
    what = describe_argv(argv)
    options = build_options(f"spawn:{what}", codec, framing, max_frame, token, handshake_timeout)
    timeouts = LadderTimeouts(exit_timeout, term_timeout)
    plan = plan_stderr(stderr, what)
    started = start_child(argv, env=env, cwd=cwd, stderr=plan, pass_fds=pass_fds, what=what)
    watch = ChildWatch(started.proc)
    url = f"spawn:{what} [pid {watch.pid}]"
    options = with_url(options, url)
    loop = asyncio.get_running_loop()
    err_reader = None
    if plan.read_fd is not None and plan.sink is not None:
        err_reader = _StderrReader(
            loop, plan.read_fd, LineSplitter(plan.sink, f"{what} [pid {watch.pid}]")
        )
    try:
        ch = await open_aio_channel(
            started.stdout_r,
            started.stdin_w,
            options,
            role="client",
            handshake=True,
            watch=watch.pidfd,
            peer=PeerInfo(pid=watch.pid, uid=os.getuid(), gid=os.getgid()),
            max_readahead=max_readahead,
            channel_factory=AioSpawnChannel,
            watch_obj=watch,
            timeouts=timeouts,
            stderr_reader=err_reader,
        )
    except BaseException:
        await _AbandonedChild(watch, timeouts, err_reader).shutdown()
        raise
    assert isinstance(ch, AioSpawnChannel)
    start_reaper()
    _live.add(ch)
    return ch


class _StderrReader:
    """The child's stderr, read by the event loop into a line sink."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, lines: LineSplitter) -> None:
        self._loop = loop
        self._fd: int | None = fd
        self._lines = lines
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._ready)

    def _ready(self) -> None:
        fd = self._fd
        if fd is None:
            return
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self._lines.feed(data)
        else:
            self.close()

    def pause(self) -> None:
        """The loop stops reading (it is ending); the pipe stays open for :meth:`detach`."""
        if self._fd is not None:
            self._loop.remove_reader(self._fd)

    def detach(self) -> tuple[int, LineSplitter] | None:
        """At interpreter exit, the loop gone: the fd and its lines, for the exit ladder."""
        fd, self._fd = self._fd, None
        return None if fd is None else (fd, self._lines)

    def close(self) -> None:
        """Deliver what is already in the pipe, then stop."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        self._loop.remove_reader(fd)
        with contextlib.suppress(OSError):
            for _ in range(16):  # bounded: a writer that never stops does not keep us here
                data = os.read(fd, 65536)
                if not data:
                    break
                self._lines.feed(data)
        self._lines.finish()
        with contextlib.suppress(OSError):
            os.close(fd)


class _Ladder:
    """The shutdown ladder with ``await`` (see :mod:`ipcwire.spawn._process`)."""

    def __init__(
        self, watch: ChildWatch, timeouts: LadderTimeouts, stderr: _StderrReader | None
    ) -> None:
        self.watch = watch
        self.timeouts = timeouts
        self.stderr = stderr
        self.loop = asyncio.get_running_loop()
        self._drain: int | None = None
        self._buf = bytearray(65536)

    def hold(self, drain_fd: int | None) -> None:
        """Take over the child's stdout (read end) for :meth:`run` to drain."""
        self._drain = drain_fd

    async def run(self) -> int | None:
        """Steps 2-5 of the ladder (stdin is closed). If the task is cancelled before the end
        (the loop shuts down with the ladder under way), the child is left to the shutdown at
        interpreter exit, which finishes the ladder (see :func:`_children_at_exit`)."""
        watch = self.watch
        if self._drain is not None:
            os.set_blocking(self._drain, False)
            self.loop.add_reader(self._drain, self._drain_ready)
        try:
            t = self.timeouts
            if not await self._gone(t.exit):
                kill_group(watch.pid, signal.SIGTERM)
                if not await self._gone(t.term):
                    kill_group(watch.pid, signal.SIGKILL)
                    await self._gone(t.kill)
        except BaseException:
            self._suspend()
            raise
        try:
            if watch.exited():
                return watch.reap(timeout=0.5)
            return watch.reap(timeout=0)
        finally:
            self._close_drain()
            watch.close()
            if self.stderr is not None:
                self.stderr.close()

    def _suspend(self) -> None:
        """The ladder stopped half-way: keep the child's watch, stdout and stderr for the exit
        (whose ladder goes on draining both: a child still writing is not cut off)."""
        if self._drain is not None:
            with contextlib.suppress(Exception):  # the loop may be closed already
                self.loop.remove_reader(self._drain)
        if self.stderr is not None:
            with contextlib.suppress(Exception):
                self.stderr.pause()
        _unfinished.add(self)

    def exit_child(self, drain_fd: int | None = None) -> LadderChild:
        """The child for the shared ladder at interpreter exit (the loop is not used)."""
        _unfinished.discard(self)
        fd, self._drain = self._drain, None
        if drain_fd is not None:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
            fd = drain_fd
        stderr = self.stderr.detach() if self.stderr is not None else None
        return LadderChild(self.watch, fd, exit_timeouts(self.timeouts), stderr=stderr)

    def _drain_ready(self) -> None:
        fd = self._drain
        if fd is None:
            return
        try:
            n = os.readv(fd, (self._buf,))
        except BlockingIOError:
            return
        except OSError:
            n = 0
        if n == 0:
            self._close_drain()

    def _close_drain(self) -> None:
        fd, self._drain = self._drain, None
        if fd is not None:
            self.loop.remove_reader(fd)
            with contextlib.suppress(OSError):
                os.close(fd)

    async def _gone(self, timeout: float) -> bool:
        """Wait until the child exited and no other live process is left in its group."""
        loop = self.loop
        deadline = loop.time() + timeout
        watch = self.watch
        while True:
            members: list[int] = []
            if watch.exited():
                found = await _group_members(loop, watch.pid)
                members = found if found is not None else []
                if not members:
                    return True
            left = deadline - loop.time()
            if left <= 0:
                return False
            waits: list[int] = []
            opened: list[int] = []
            for pid in members:
                with contextlib.suppress(OSError):
                    opened.append(os.pidfd_open(pid))
            waits.extend(opened)
            if not watch.exited() and watch.pidfd is not None:
                waits.append(watch.pidfd)
            step = min(left, 0.5) if members or watch.pidfd is None else left
            try:
                await _any_readable(loop, waits, step)
            finally:
                for fd in opened:
                    with contextlib.suppress(OSError):
                        os.close(fd)


class _LoopScans:
    """The group lookups of a loop's ladders, answered together: every ladder that asks in
    one iteration of the loop waits for one pass over /proc made in the next (after all of
    them saw their child exit). One pass each, in the loop, made 400 agents' closes take
    1.27 s with the loop stalled (helper-87); the blocking ladders share theirs alike."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._asked: list[tuple[int, asyncio.Future[list[int] | None]]] = []

    def ask(self, pgid: int) -> asyncio.Future[list[int] | None]:
        fut: asyncio.Future[list[int] | None] = self._loop.create_future()
        if not self._asked:
            self._loop.call_soon(self._answer)
        self._asked.append((pgid, fut))
        return fut

    def _answer(self) -> None:
        asked, self._asked = self._asked, []
        found = members_of([pgid for pgid, _ in asked], time.monotonic())
        for pgid, fut in asked:
            if not fut.done():
                fut.set_result(None if found is None else found[pgid])


_loop_scans: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopScans] = (
    weakref.WeakKeyDictionary()
)


async def _group_members(loop: asyncio.AbstractEventLoop, pgid: int) -> list[int] | None:
    """Live processes left in group ``pgid`` other than its leader (None: /proc cannot say)."""
    scans = _loop_scans.get(loop)
    if scans is None:
        scans = _loop_scans[loop] = _LoopScans(loop)
    return await scans.ask(pgid)


async def _any_readable(loop: asyncio.AbstractEventLoop, fds: list[int], timeout: float) -> None:
    """Wait until one of ``fds`` is readable, or ``timeout`` passes.

    Waits on duplicates: the loop holds one reader per fd, and the same pidfd is watched by
    the transport (how ``recv`` learns of the exit), ``wait()`` and the ladder at once; adding
    or removing a reader on the fd itself would take another waiter's away.
    """
    if not fds:
        await asyncio.sleep(min(timeout, 0.02))
        return
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    dups: list[int] = []
    try:
        for fd in fds:
            dups.append(os.dup(fd))
            loop.add_reader(dups[-1], ready)
        with contextlib.suppress(TimeoutError):
            async with within(timeout):
                await fut
    finally:
        for fd in dups:
            loop.remove_reader(fd)
            os.close(fd)


class _AbandonedChild:
    """Shuts down a child whose channel never came up (a failed handshake)."""

    def __init__(
        self, watch: ChildWatch, timeouts: LadderTimeouts, stderr: _StderrReader | None
    ) -> None:
        self._ladder = _Ladder(watch, timeouts, stderr)

    async def shutdown(self) -> None:
        await self._ladder.run()


class AioSpawnChannel(AioPipeChannel):
    """An asyncio channel to a child; ``aclose()`` shuts the child down (bounded)."""

    def __init__(
        self,
        url: str,
        wire: Any,
        *,
        watch_obj: ChildWatch,
        timeouts: LadderTimeouts,
        stderr_reader: _StderrReader | None,
        **kw: Any,
    ) -> None:
        super().__init__(url, wire, **kw)
        self._watch = watch_obj
        self._ladder = _Ladder(watch_obj, timeouts, stderr_reader)
        self._shutdown: asyncio.Task[int | None] | None = None
        self._returncode: int | None = None
        self._owner = os.getpid()  # a forked process's copy does not shut the child down

    @property
    def pid(self) -> int:
        """The child's pid (also its process group id)."""
        return self._watch.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once the child exited (negative: killed by that signal)."""
        if self._returncode is not None:
            return self._returncode
        return self._watch.status

    def send_signal(self, sig: int | str, *, group: bool = False) -> None:
        """Send a signal to the child (or its whole group), as the blocking version.

        Raises:
            ConfigurationError: an unknown signal name.
        """
        signal_child(self.pid, self.returncode is not None, sig, group)

    async def wait(self, timeout: float | None = None) -> int | None:
        """Wait until the child exits by itself; its status, or None if ``timeout`` passed."""
        fd = self._watch.pidfd
        if self.returncode is None and fd is not None:
            await _any_readable(self._loop, [fd], 1e9 if timeout is None else timeout)
        elif self.returncode is None:
            deadline = self._loop.time() + (1e9 if timeout is None else timeout)
            while self.returncode is None and self._loop.time() < deadline:
                await asyncio.sleep(0.02)
        return self.returncode

    # -- the end of the stream carries the exit status --------------------------------------
    def _connection_lost(self, exc: Exception | None) -> None:
        fd = self._watch.pidfd
        if self._closed or fd is None or self._watch.exited():
            super()._connection_lost(exc)
            return
        # End of stream usually comes a moment before the exit status: wait for it, briefly.
        task = self._loop.create_task(_any_readable(self._loop, [fd], 0.5))
        task.add_done_callback(lambda _: AioPipeChannel._connection_lost(self, exc))

    def _explain_end(self, err: IpcwireError, cause: BaseException | None) -> IpcwireError:
        err = super()._explain_end(err, cause)
        if self._closed or not isinstance(err, EndOfChannel | ChannelBroken):
            return err
        status = self.returncode
        if status is None:
            why, failed = "the child is still running (it closed its stdout)", False
        else:
            why, failed = f"the child {describe_status(status)}", status != 0
        kind: type[IpcwireError] = type(err)
        if failed and isinstance(err, EndOfChannel):
            kind = ChannelBroken
        new = kind(f"{err}; {why}", endpoint=err.endpoint)
        new.__cause__ = err.__cause__
        return new

    # -- closing ----------------------------------------------------------------------------
    def close(self) -> None:
        """Start the shutdown ladder (``aclose()`` waits for it). From another thread than
        the loop's, the loop starts it (soon after)."""
        if self._shutdown is not None or self._closed or self._hand_close_to_loop():
            return
        if self._loop.is_closed():
            self._close_without_loop_ladder()
            return
        t = self._fd_transport()
        self._ladder.hold(t.detach_read() if t is not None else None)
        super().close()  # wakes receivers; stdin closes once what was sent is flushed
        self._shutdown = self._loop.create_task(self._run_ladder(t))

    async def _run_ladder(self, t: FdTransport | None) -> int | None:
        try:
            self._returncode = await self._ladder.run()
        finally:
            _live.discard(self)  # done, or (cancelled) the ladder waits for the exit itself
            if t is not None:
                with contextlib.suppress(RuntimeError):  # a closed loop (garbage collection)
                    t.abort()
        return self._returncode

    def _close_without_loop_ladder(self) -> None:
        """``close()`` after the loop ended (the channel outlived ``asyncio.run()``): the
        ladder cannot run in the loop, so it runs here, blocking, as at interpreter exit
        (stdin closed, then SIGTERM and SIGKILL to the group after their waits): the child
        never outlives the channel's close."""
        _live.discard(self)
        child = self._exit_child()  # takes the fds: the channel's own close has none left
        super().close()
        run_ladders([child])

    def _exit_child(self) -> LadderChild:
        """At interpreter exit, when the loop is gone: close stdin, hand over to the shared
        blocking ladder (shorter waits)."""
        t = self._fd_transport()
        rfd, wfd = t.steal_fds() if t is not None else (None, None)
        if wfd is not None:
            with contextlib.suppress(OSError):
                os.close(wfd)
        return self._ladder.exit_child(rfd)

    def __del__(self) -> None:
        """Collected without ``aclose()``: close the child's stdin now, and leave the rest of
        the ladder to a background thread (the blocking ladder: a finalizer cannot await)."""
        if getattr(self, "_shutdown", True) is not None or self._closed:
            return  # closed (its ladder task holds it until done), or never made
        self._closed = True
        t = self._fd_transport()
        rfd, wfd = t.steal_fds() if t is not None else (None, None)  # (the loop is not used)
        if os.getpid() != self._owner:  # a forked copy: the child is the parent's
            for fd in (rfd, wfd):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            return
        warnings.warn(
            f"unclosed spawn channel {self.url!r}: its child is shut down now; aclose() it, "
            "or use 'async with'",
            ResourceWarning,
            stacklevel=1,
            source=self,
        )
        if wfd is not None:  # stdin closed: the child sees EOF
            with contextlib.suppress(OSError):
                os.close(wfd)
        stderr = self._ladder.stderr
        if stderr is not None:  # the loop stops reading it: the ladder's thread does
            with contextlib.suppress(Exception):
                stderr.pause()
        child = self._ladder.exit_child(rfd)
        child.timeouts = self._ladder.timeouts  # the channel's own waits, not the exit's
        hand_over(child)

    async def aclose(self) -> None:
        """Shut the child down and wait: at most ``exit_timeout + term_timeout + 2`` s."""
        self.close()
        if self._shutdown is not None:  # (None: closed without its loop, ladder done)
            await asyncio.shield(self._shutdown)


# Children whose channel was not closed yet (weak: a dropped one is shut down when collected).
_live: weakref.WeakSet[AioSpawnChannel] = weakref.WeakSet()
_unfinished: set[_Ladder] = set()  # ladders cut short by the end of their loop


def _children_at_exit() -> list[LadderChild]:
    """At interpreter exit: children whose asyncio channel was never closed, or whose ladder
    the end of the loop interrupted; the shared blocking ladder finishes them all."""
    children = []
    for ch in list(_live):
        _live.discard(ch)
        with contextlib.suppress(Exception):
            children.append(ch._exit_child())
    for ladder in list(_unfinished):
        children.append(ladder.exit_child())
    return children


def _forget_children() -> None:
    """In a process forked from this one: the children are its parent's; its exit must leave
    them alone."""
    _live.clear()
    _unfinished.clear()


shut_down_at_exit(_children_at_exit)
os.register_at_fork(after_in_child=_forget_children)


async def stdio(
    *,
    codec: str | Codec | None = None,
    framing: str | None = None,
    max_frame: int | None = None,
    token: str | bytes | None = None,
    exit_on_parent_death: bool = False,
    redirect: bool = True,
    handshake_timeout: float | None = None,
) -> AioPipeChannel:
    """The child's side, for asyncio: as :func:`ipcwire.stdio`.

    Raises:
        LocalProtocolError, ConfigurationError, AuthenticationFailed, HandshakeError, Timeout.
    """
    options = build_options("stdio:", codec, framing, max_frame, token, handshake_timeout)
    rfd, wfd, restore, nonblocking = claim_stdio(redirect=redirect)
    ch = await open_aio_channel(
        rfd,
        wfd,
        options,
        role="server",
        handshake=True,
        nonblocking=nonblocking,
        restore=restore,
    )
    if exit_on_parent_death:
        watch_parent(pipe=wfd)
    return ch


async def stdio_channel(
    read_fd: int,
    write_fd: int,
    *,
    codec: str | Codec | None = None,
    framing: str | None = None,
    max_frame: int | None = None,
    token: str | bytes | None = None,
    handshake_timeout: float | None = None,
) -> AioPipeChannel:
    """The child's side on given fds (taken over), for asyncio: as
    :func:`ipcwire.spawn.stdio_channel`.

    Raises:
        ConfigurationError, AuthenticationFailed, HandshakeError, Timeout.
    """
    options = build_options(
        f"stdio:fd{read_fd},{write_fd}", codec, framing, max_frame, token, handshake_timeout
    )
    return await open_aio_channel(read_fd, write_fd, options, role="server", handshake=True)

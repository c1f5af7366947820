"""``ipcwire.spawn()``: a channel to a child process over its stdin and stdout (blocking).

::

    with ipcwire.spawn(["python", "agent.py"]) as child:       # JSON lines by default
        child.send({"op": "ping"})
        print(child.recv(timeout=5))

What cannot go wrong, by construction:

* no pipe deadlock: a send that waits on the child's full stdin reads the child's stdout
  into the receive buffer meanwhile (up to ``max_readahead`` bytes);
* stderr is never a pipe nobody reads (see ``stderr=``);
* the child runs in its own process group; :meth:`SpawnChannel.close` runs the shutdown
  ladder (close stdin, wait ``exit_timeout``, SIGTERM the group, wait ``term_timeout``,
  SIGKILL the group, reap) and returns within ``exit_timeout + term_timeout + 2`` seconds,
  leaving no zombie and no process of the group behind;
* the child's exit is noticed at once, even when a grandchild holds its stdout open: ``recv``
  raises ``EndOfChannel`` (exit code 0) or ``ChannelBroken`` (non-zero, killed by a signal,
  or dead in the middle of a message), with the exit code or signal in the message;
* a channel dropped without :meth:`~SpawnChannel.close` is shut down when the garbage
  collector takes it (a ``ResourceWarning`` says so): stdin closed at once, the rest of the
  ladder in a background thread (see :mod:`ipcwire.spawn._dropped`);
* children still running when the interpreter exits are shut down the same way (shorter
  waits), all of them together: exit takes the time of one ladder, not one per child.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ipcwire._core.codecs import Codec
from ipcwire.channel import PeerInfo
from ipcwire.pipe._channel import DEFAULT_MAX_READAHEAD, ExplainingPipeChannel, PipeChannel
from ipcwire.pipe._fd import FdStream
from ipcwire.pipe._handshake import fd_handshake
from ipcwire.spawn._common import (
    Arg,
    Env,
    abandon_started,
    build_options,
    describe_argv,
    kill_started,
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
    run_ladders,
    shut_down_at_exit,
    wait_readable,
)
from ipcwire.spawn._stderr import StderrPump, plan_stderr
from ipcwire.spawn._stdio import claim_stdio, watch_parent

__all__ = ["SpawnChannel", "close_all", "spawn", "stdio", "stdio_channel"]

# Open channels: shut down at exit if never closed (weak: a dropped one is shut down when
# collected, see SpawnChannel.__del__).
_live: weakref.WeakSet[SpawnChannel] = weakref.WeakSet()
_closing: set[SpawnChannel] = set()  # channels whose close() runs the ladder right now
_live_lock = threading.Lock()


def spawn(
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
) -> SpawnChannel:
    """Start ``argv`` and return a channel over its stdin (we send) and stdout (we receive).

    ``framing`` is ``"ndjson"`` by default (one JSON document per line, codec ``json``), which
    any language can speak; ``framing="length"`` with ``codec="bytes"``/``"msgpack"`` is
    faster. No handshake happens unless ``token`` is given (then the child must call
    :func:`ipcwire.stdio` with the same token). ``max_frame`` (64 MiB by default) bounds one
    line or frame; a longer one raises ``FrameTooLarge`` and is skipped.

    ``env`` replaces the environment (``None``: inherit); ``cwd``: the working directory;
    ``stderr``: where the child's stderr goes (see :mod:`ipcwire.spawn._stderr`: ``None`` for
    the parent's stderr, a callable, a logger, a file or path, ``DEVNULL``); ``pass_fds``:
    extra fds the child inherits. ``exit_timeout``/``term_timeout``: the waits of the close
    ladder. ``max_readahead``: how much of the child's output a blocked send may buffer.

    Raises:
        ConfigurationError: bad options (an empty argv, ``stderr=PIPE``...).
        ChannelBroken: the program was not found, or died during the handshake.
        PermissionDenied: the program is not executable.
        ResourceExhausted: out of processes or file descriptors.
        AuthenticationFailed, HandshakeError, Timeout: with ``token``, the handshake failed.
    """
    what = describe_argv(argv)
    options = build_options(f"spawn:{what}", codec, framing, max_frame, token, handshake_timeout)
    timeouts = LadderTimeouts(exit_timeout, term_timeout)
    plan = plan_stderr(stderr, what)
    started = start_child(argv, env=env, cwd=cwd, stderr=plan, pass_fds=pass_fds, what=what)
    proc = started.proc
    watch = pump = stream = ch = None
    try:
        url = f"spawn:{what} [pid {proc.pid}]"
        options = with_url(options, url)
        watch = ChildWatch(proc)
        if plan.read_fd is not None and plan.sink is not None:
            pump = StderrPump(plan.read_fd, plan.sink, f"{what} [pid {proc.pid}]")
        stream = FdStream(started.stdout_r, started.stdin_w, endpoint=url, watch=watch.pidfd)
        ch = SpawnChannel(
            stream,
            url,
            options,
            watch=watch,
            timeouts=timeouts,
            pump=pump,
            max_readahead=max_readahead,
        )
        ch._start()
    except BaseException:
        if ch is not None:
            ch.close()
        else:  # interrupted (Ctrl-C, a graceful shutdown) before the channel existed
            if stream is not None:
                kill_started(proc)
                stream.close()
            else:
                abandon_started(started)  # kill it, close the pipes
            if pump is not None:
                pump.stop()
            else:
                plan.abandon()
            if watch is not None:
                watch.close()
        raise
    return ch


class SpawnChannel(ExplainingPipeChannel):
    """A channel to a child process; :meth:`close` shuts the child down (see the module)."""

    def __init__(
        self,
        stream: FdStream,
        url: str,
        options: Any,
        *,
        watch: ChildWatch,
        timeouts: LadderTimeouts,
        pump: StderrPump | None,
        max_readahead: int,
    ) -> None:
        super().__init__(
            stream,
            options.wire(),
            url,
            peer=PeerInfo(pid=watch.pid, uid=os.getuid(), gid=os.getgid()),
            max_readahead=max_readahead,
            describe_end=self._child_state,
        )
        self._options = options
        self._watch = watch
        self._timeouts = timeouts
        self._pump = pump
        self._close_lock = threading.Lock()
        self._shut_down = False  # close() has begun
        self._done = False  # its ladder is over
        self._returncode: int | None = None
        self._owner = os.getpid()  # a forked process's copy does not shut the child down

    def _start(self) -> None:
        if self._options.token is not None:
            self._wire, self._decoder = fd_handshake(self._fds, self._options, client=True)
            self._pack = self._wire.pack
            self._decode = self._wire.decode
        start_reaper()
        with _live_lock:
            _live.add(self)

    # -- the child --------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        """The child's pid (also its process group id)."""
        return self._watch.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once the child has exited (negative: killed by that signal)."""
        if self._returncode is not None:
            return self._returncode
        return self._watch.status

    def send_signal(self, sig: int | str, *, group: bool = False) -> None:
        """Send a signal (``"USR1"``, ``signal.SIGUSR1``...) to the child, or its whole group.
        Once the child exited, only ``group=True`` does anything: it reaches the grandchildren
        left in the group.

        Raises:
            ConfigurationError: an unknown signal name.
        """
        signal_child(self.pid, self.returncode is not None, sig, group)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait until the child exits by itself (without closing anything); its status, or
        None if ``timeout`` passed first."""
        if self._watch.pidfd is not None and self._watch.status is None:
            wait_readable(self._watch.pidfd, timeout)
        elif timeout is None or timeout > 0:
            self._watch.wait_exited(timeout if timeout is not None else 1e9)
        return self.returncode

    def _child_state(self) -> tuple[str, bool] | None:
        status = self.returncode
        if status is None and self._watch.wait_exited(0.5):  # EOF usually precedes the exit
            status = self._watch.status
        if status is None:
            return "the child is still running (it closed its stdout)", False
        return f"the child {describe_status(status)}", status != 0

    # -- closing ----------------------------------------------------------------------------
    def close(self) -> None:
        """Shut the child down (the ladder in the module docstring) and release everything.

        Idempotent; a second caller waits for the first to finish. Bounded by
        ``exit_timeout + term_timeout + 2`` seconds.
        """
        with self._close_lock:
            child = self._begin_shutdown(self._timeouts)
            if child is None:
                return
            # If this raises (Ctrl-C while the ladder waits), the channel stays in _closing:
            # another close(), or else the exit, takes the ladder up again.
            run_ladders([child])
            self._end_shutdown(child.status)

    def __del__(self) -> None:
        """Collected without :meth:`close`: close the child's stdin now, and leave the rest
        of the ladder to a background thread (a finalizer must not wait, nor take a lock)."""
        if getattr(self, "_shut_down", True):
            return  # closed, being closed (then referenced: not collected), or never made
        self._shut_down = True
        self._closed = True
        if os.getpid() != self._owner:  # a forked copy: the child is the parent's
            self._fds.close()
            self._watch.close()
            return
        warnings.warn(
            f"unclosed spawn channel {self.url!r}: its child is shut down now; close() it, "
            "or use 'with'",
            ResourceWarning,
            stacklevel=1,
            source=self,
        )
        drain = self._fds.close_detaching_read()  # stdin closed: the child sees EOF
        child = LadderChild(self._watch, drain, self._timeouts)
        if self._pump is not None:
            child.on_done = self._pump.stop
        hand_over(child)

    def _close_for_timeout(self) -> None:
        """After request()'s timeout: closed now (stdin too: the child sees EOF), the rest of
        the ladder in a thread, so that the Timeout is raised when timeout= passes, not after
        the child's shutdown (seconds). A later close() waits for that ladder; so does the
        interpreter's exit (:func:`_wait_for_other_threads`)."""
        if not self._close_lock.acquire(blocking=False):
            return  # another thread is closing it
        try:
            child = self._begin_shutdown(self._timeouts)
        except BaseException:
            self._close_lock.release()
            raise
        if child is None:
            self._close_lock.release()
            return
        child.on_done = _finisher(self, child)  # run_ladders calls it, whatever happens
        name = f"ipcwire-spawn-{self.pid}-close"
        threading.Thread(target=run_ladders, args=([child],), name=name, daemon=True).start()

    def _begin_shutdown(self, timeouts: LadderTimeouts) -> LadderChild | None:
        """Close stdin (the child sees EOF); the child for the ladder, None if done already.
        Also takes up a ladder an exception interrupted. The caller holds ``_close_lock``."""
        if self._done:
            return None
        with _live_lock:
            _closing.add(self)  # first: until the ladder is over, the exit knows of it
            _live.discard(self)
        self._shut_down = True
        self._closed = True
        drain = self._fds.close_detaching_read()  # stdin closed: the child sees EOF
        if self._watch.proc.returncode is not None:  # an interrupted ladder had reaped it
            if drain is not None:
                os.close(drain)
            self._end_shutdown(self._watch.proc.returncode)
            return None
        self._watch.reopen()  # an interrupted ladder closed its pidfd
        return LadderChild(self._watch, drain, timeouts)

    def _end_shutdown(self, status: int | None) -> None:
        self._returncode = status
        self._done = True
        try:
            if self._pump is not None:
                self._pump.stop()
        finally:
            with _live_lock:
                _closing.discard(self)


def stdio(
    *,
    codec: str | Codec | None = None,
    framing: str | None = None,
    max_frame: int | None = None,
    token: str | bytes | None = None,
    exit_on_parent_death: bool = False,
    redirect: bool = True,
    handshake_timeout: float | None = None,
) -> PipeChannel:
    """The child's side of :func:`spawn`: a channel over this process's stdin and stdout.

    The protocol moves to private fds; fd 0 then reads ``/dev/null`` and fd 1 goes to stderr,
    so a stray ``print()`` or a sub-subprocess cannot corrupt the stream (``redirect=False``
    keeps fds 0/1 as they are). Call it once, before anything reads ``sys.stdin``. Options as
    for :func:`spawn` (JSON lines by default; the same ``token`` as the parent, if any).
    ``exit_on_parent_death``: SIGTERM this process as soon as the parent dies (combine with
    :func:`ipcwire.graceful_shutdown` for an orderly exit). Without it the parent's death shows
    as ``EndOfChannel`` on the next ``recv``.

    Raises:
        LocalProtocolError: called twice in one process.
        ConfigurationError: bad options.
        AuthenticationFailed, HandshakeError, Timeout: with ``token``, the handshake failed.
    """
    options = build_options("stdio:", codec, framing, max_frame, token, handshake_timeout)
    rfd, wfd, restore, nonblocking = claim_stdio(redirect=redirect)
    ch = _channel_on(rfd, wfd, options, restore=restore, nonblocking=nonblocking)
    if exit_on_parent_death:
        watch_parent(pipe=wfd)
    return ch


def stdio_channel(
    read_fd: int,
    write_fd: int,
    *,
    codec: str | Codec | None = None,
    framing: str | None = None,
    max_frame: int | None = None,
    token: str | bytes | None = None,
    handshake_timeout: float | None = None,
) -> PipeChannel:
    """The child's side of a spawn channel on given fds (which it takes over), for programs
    that talk to their parent on fds other than 0 and 1, and for tests.

    Raises:
        ConfigurationError, AuthenticationFailed, HandshakeError, Timeout: as :func:`stdio`.
    """
    options = build_options(
        f"stdio:fd{read_fd},{write_fd}", codec, framing, max_frame, token, handshake_timeout
    )
    return _channel_on(read_fd, write_fd, options, restore={}, nonblocking=True)


def _channel_on(
    rfd: int, wfd: int, options: Any, *, restore: dict[int, int], nonblocking: bool
) -> PipeChannel:
    stream = FdStream(rfd, wfd, endpoint=options.url, nonblocking=nonblocking, restore=restore)
    try:
        wire, decoder = fd_handshake(stream, options, client=False)
    except BaseException:
        stream.close()
        raise
    return PipeChannel(stream, wire, options.url, decoder=decoder)


def close_all(channels: Iterable[SpawnChannel]) -> None:
    """Close several children together, as :meth:`SpawnChannel.close` closes one: every
    stdin first, then one shared wait, one round of SIGTERM, one wait, one round of SIGKILL.
    It takes about as long as the slowest child's own close, not the sum of them (an
    orchestrator stopping 50 agents that ignore the end of stdin: about 2 s, not 100 s).
    Channels closed already are skipped; one another thread is closing is waited for.

    If it is interrupted (Ctrl-C), the children not yet reaped stay with their channels:
    another ``close()``, or the interpreter's exit, takes their ladder up again.
    """
    chans = sorted(set(channels), key=lambda ch: ch.pid)  # one order: no lock cycles
    held: list[SpawnChannel] = []
    started: list[tuple[SpawnChannel, LadderChild]] = []
    try:
        for ch in chans:
            ch._close_lock.acquire()
            held.append(ch)
            child = ch._begin_shutdown(ch._timeouts)
            if child is not None:
                started.append((ch, child))
        run_ladders([child for _, child in started])
        for ch, child in started:
            ch._end_shutdown(child.status)
    finally:
        for ch in held:
            ch._close_lock.release()


def _children_at_exit() -> list[LadderChild]:
    """At interpreter exit: close the stdin of every child whose channel was never closed, or
    whose close() an exception interrupted, and hand them to the shared ladder
    (:func:`ipcwire.spawn._process.run_ladders`)."""
    with _live_lock:
        live = set(_live) | _closing
    children = []
    for ch in live:
        if not ch._close_lock.acquire(blocking=False):
            continue  # another thread is closing it: see _wait_for_other_threads
        try:
            child = ch._begin_shutdown(exit_timeouts(ch._timeouts))
        except Exception:  # pragma: no cover - shut the others down all the same
            child = None
        if child is None:
            ch._close_lock.release()
            continue
        child.on_done = _finisher(ch, child)
        children.append(child)
    return children


def _finisher(ch: SpawnChannel, child: LadderChild) -> Callable[[], None]:
    def done() -> None:
        try:
            ch._end_shutdown(child.status)
        finally:
            ch._close_lock.release()

    return done


def _wait_for_other_threads() -> None:
    """After the shared ladder: wait for those other threads were running. Such a thread may
    be a daemon, stopped once the interpreter finalizes, which would leave its child behind.
    The wait is no longer than the exit's own ladder (their waits may be far longer: an
    ``exit_timeout`` of an hour); then the groups still there get SIGKILL, and a last wait."""
    with _live_lock:
        others = _closing | {ch for ch in _live if ch._close_lock.locked()}
    if not others:
        return
    cap = max(exit_timeouts(ch._timeouts).bound for ch in others)
    late = [ch for ch in others if not _ladder_over(ch, time.monotonic() + cap + 1.0)]
    for ch in late:
        if ch._watch.proc.returncode is None:  # not reaped: its pid is still its own
            kill_group(ch.pid, signal.SIGKILL)
    deadline = time.monotonic() + max((ch._timeouts.kill for ch in late), default=0.0) + 1.0
    for ch in late:
        _ladder_over(ch, deadline)


def _ladder_over(ch: SpawnChannel, deadline: float) -> bool:
    """Wait until another thread's close() is over, or ``deadline``."""
    if ch._close_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
        ch._close_lock.release()
        return True
    return False


def _forget_children() -> None:
    """In a process forked from this one: the children are its parent's, which it cannot
    wait for; its exit must leave them alone. (And a lock another thread held at the fork
    would stay held here for ever.)"""
    global _live_lock
    _live_lock = threading.Lock()
    for ch in set(_live) | _closing:
        # One a parent thread was closing at the fork stays locked here, with no thread to
        # release it: the child's close() of its copy would wait for ever.
        ch._close_lock = threading.Lock()
    _live.clear()
    _closing.clear()


shut_down_at_exit(_children_at_exit, _wait_for_other_threads)
os.register_at_fork(after_in_child=_forget_children)

"""Signals for asyncio: wait (``loop.add_signal_handler``), send, terminate, shut down.

asyncio already turns signals into loop callbacks through the wakeup fd (its handler writes
one byte; the callback runs later in the loop), so everything here runs in the loop, never
in signal context.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable, Iterable
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ipcwire._core.url import Endpoint
from ipcwire._deadline import limit
from ipcwire.aio._timeouts import within, within_at
from ipcwire.aio._without_loop import handed_to_loop
from ipcwire.aio.channel import AioChannel, AioListener
from ipcwire.channel import ChannelStatistics, PeerInfo
from ipcwire.errors import (
    ChannelBroken,
    ChannelClosed,
    ConfigurationError,
    InvalidURL,
    LocalProtocolError,
    Timeout,
)
from ipcwire.options import ChannelOptions, reject_unknown
from ipcwire.signals._aio_ending import CleanupTask, cleaning, end_run
from ipcwire.signals._names import (
    SignalLike,
    check_catchable,
    exit_status,
    parse_signal,
    parse_signals,
    parse_target,
    send_signal,
    signals_url,
    target_pid,
    warn_taken_over,
)
from ipcwire.signals._shutdown import cannot_clean_up, interrupted_close
from ipcwire.signals._terminate import _KILL_WAIT, _gone, joined

__all__ = [
    "AioGracefulShutdown",
    "AioSignalSender",
    "AioSignalWaiter",
    "connect",
    "graceful_shutdown",
    "listen",
    "terminate",
]

log = logging.getLogger("ipcwire")


class _LoopSignals:
    """The one loop handler per signal that every waiter and graceful shutdown of a loop
    shares (``loop.add_signal_handler`` keeps one callback per signal: a second would replace
    the first), and the handler each signal had before, put back when the last user leaves."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop_ref = weakref.ref(loop)  # not a reference: the loop is the registry's key
        self._users: dict[int, list[Callable[[int], None]]] = {}
        self._previous: dict[int, Any] = {}

    def add(self, signums: Iterable[int], cb: Callable[[int], None], url: str) -> list[int]:
        """Call ``cb(signum)`` on each of ``signums``; the signals now handled for it.
        ``url`` (``signal:USR1,HUP``) names the waiter or shutdown in errors.

        Raises:
            ConfigurationError: an uncatchable signal (SIGKILL, SIGSTOP); this loop cannot
                handle signals (not the main thread).
        """
        signums = list(signums)
        check_catchable(signums, url)
        if threading.current_thread() is not threading.main_thread():
            raise ConfigurationError(
                f"{url}: cannot handle signals in an event loop outside the main thread "
                f"(Python installs signal handlers only there): run the loop in the main "
                f"thread (asyncio.run in the main thread does)",
                endpoint=url,
            )
        done: list[int] = []
        loop = self._loop_ref()
        try:
            if loop is None:
                raise RuntimeError("the event loop is gone")
            for signum in signums:
                if signum not in self._users:
                    previous = signal.getsignal(signum)
                    loop.add_signal_handler(signum, self._fire, signum)
                    warn_taken_over(signum, previous, url)
                    self._previous[signum] = previous
                    self._users[signum] = []
                self._users[signum].append(cb)
                done.append(signum)
        except (RuntimeError, ValueError) as exc:
            self.remove(done, cb)
            raise ConfigurationError(
                f"{url}: cannot handle signals in this event loop ({exc})", endpoint=url
            ) from None
        return done

    def remove(self, signums: Iterable[int], cb: Callable[[int], None]) -> None:
        """Stop calling ``cb``; a signal nobody else handles gets its previous handler."""
        for signum in signums:
            users = self._users.get(signum, [])
            if cb in users:
                users.remove(cb)
            if users or signum not in self._users:
                continue
            del self._users[signum]
            previous = self._previous.pop(signum)
            loop = self._loop_ref()
            if loop is None:
                continue
            with contextlib.suppress(RuntimeError, ValueError):
                loop.remove_signal_handler(signum)
                if previous is not None:  # None: not installed from Python; leave the default
                    signal.signal(signum, previous)

    def _fire(self, signum: int) -> None:
        for cb in list(self._users.get(signum, ())):
            cb(signum)


_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopSignals] = (
    weakref.WeakKeyDictionary()
)


def _signals(loop: asyncio.AbstractEventLoop) -> _LoopSignals:
    found = _loops.get(loop)
    if found is None:
        found = _loops[loop] = _LoopSignals(loop)
    return found


class AioSignalWaiter(AioChannel):
    """Receives the given signals, one message (:class:`signal.Signals`) per signal."""

    def __init__(self, signals: Iterable[SignalLike]) -> None:
        wanted = tuple(dict.fromkeys(parse_signals(signals)))
        if not wanted:
            raise LocalProtocolError("AioSignalWaiter needs at least one signal to wait for")
        self.signals = wanted
        self.url = signals_url(wanted)
        self._loop = asyncio.get_running_loop()
        self._queue: dict[int, None] = {}  # unread signals, in order, each once
        self._coalesced = 0
        self._waiters: set[asyncio.Future[None]] = set()  # every task in recv()
        self._closed = False
        self._received = 0
        self._installed = _signals(self._loop).add(
            (int(s) for s in wanted), self._on_signal, self.url
        )

    def _on_signal(self, signum: int) -> None:
        if signum in self._queue:  # unread still: held once, as the kernel does
            self._coalesced += 1
            return
        self._queue[signum] = None
        self._wake()

    def _wake(self) -> None:
        for w in self._waiters:
            if not w.done():
                w.set_result(None)

    async def recv(self, *, timeout: float | None = None) -> signal.Signals:
        """The next signal.

        Raises:
            Timeout: none arrived in time.
            ChannelClosed: closed.
        """
        deadline = None if timeout is None else self._loop.time() + timeout
        while True:
            if self._closed:
                raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
            if self._queue:
                self._received += 1
                signum = next(iter(self._queue))
                del self._queue[signum]
                return signal.Signals(signum)
            if timeout == 0:
                raise Timeout(f"no signal ({self.url[7:]}) yet", endpoint=self.url)
            fut = self._loop.create_future()
            self._waiters.add(fut)
            try:
                async with within_at(deadline):
                    await fut
            except TimeoutError:
                raise Timeout(
                    f"no signal ({self.url[7:]}) within {timeout} s", endpoint=self.url
                ) from None
            finally:
                self._waiters.discard(fut)

    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        """Raises: LocalProtocolError (this end receives)."""
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        raise LocalProtocolError(f"{self.url} receives signals; send with AioSignalSender")

    def close(self) -> None:
        """Stop receiving: a task in :meth:`recv` gets ``ChannelClosed``, and a signal that
        nobody else in the loop waits for gets its previous handler back. From another
        thread than the running loop's, the close is handed to the loop (its handlers and
        futures are not thread-safe; removed from another thread, the handler stayed and
        swallowed the signal for good, and ``recv()`` went on waiting)."""
        if self._closed:
            return
        self._closed = True
        if not handed_to_loop(self._loop, self._close_in_loop):
            self._close_in_loop()

    def _close_in_loop(self) -> None:
        _signals(self._loop).remove(self._installed, self._on_signal)
        self._wake()

    async def aclose(self) -> None:
        self.close()

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            0, self._received, 0, 0, buffered_bytes=len(self._queue), dropped=self._coalesced
        )


class AioSignalSender(AioChannel):
    """Sends signals to a process (``group``: its process group)."""

    def __init__(self, target: Any, *, group: bool = False) -> None:
        self.pid = target_pid(target)
        self.group = group
        self.url = f"signal:{'group:' if group else ''}{self.pid}"
        self._closed = False
        self._sent = 0

    async def send(self, obj: Any, *, timeout: float | None = None) -> None:
        """Send one signal.

        Raises:
            ChannelBroken, PermissionDenied, ConfigurationError, ChannelClosed.
        """
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        send_signal(self.pid, obj, group=self.group)
        self._sent += 1

    async def recv(self, *, timeout: float | None = None) -> Any:
        """Raises: LocalProtocolError (this end sends)."""
        if self._closed:
            raise ChannelClosed(f"{self.url} is closed", endpoint=self.url)
        raise LocalProtocolError(f"{self.url} sends signals; receive with AioSignalWaiter")

    def close(self) -> None:
        self._closed = True

    async def aclose(self) -> None:
        self._closed = True

    @property
    def peer(self) -> PeerInfo | None:
        return PeerInfo(pid=self.pid)

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(self._sent, 0, 0, 0)


class _AioSignalListener(AioListener):
    def __init__(self, url: str, waiter: AioSignalWaiter) -> None:
        self.url = url
        self._waiter = waiter
        self._given = False
        self._stopped = asyncio.Event()

    async def accept(self, *, timeout: float | None = None) -> AioChannel:
        if self._stopped.is_set():
            raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
        if not self._given:
            self._given = True
            return self._waiter
        try:
            async with within(timeout):
                await self._stopped.wait()
        except TimeoutError:
            raise Timeout(f"{self.url} has one channel, already accepted") from None
        raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)

    def close(self) -> None:
        if handed_to_loop(self._waiter._loop, self.close):  # (another thread, as the waiter)
            return
        self._stopped.set()
        self._waiter.close()

    @property
    def closed(self) -> bool:
        return self._stopped.is_set()


async def connect(endpoint: Endpoint, options: ChannelOptions, **kw: Any) -> AioSignalSender:
    """As :func:`ipcwire.signals.blocking.connect`.

    Raises:
        InvalidURL, ConfigurationError.
    """
    kw.pop("timeout", None)
    reject_unknown(kw, endpoint, ("timeout",))
    pid, group = parse_target(endpoint)
    return AioSignalSender(pid, group=group)


async def listen(endpoint: Endpoint, options: ChannelOptions, **kw: Any) -> AioListener:
    """As :func:`ipcwire.signals.blocking.listen`, in the running (main-thread) loop.

    Raises:
        InvalidURL, ConfigurationError.
    """
    reject_unknown(kw, endpoint, ())
    names = [n for n in endpoint.path.split(",") if n.strip()]
    if not names:
        raise InvalidURL(f"{endpoint}: name the signals to wait for, such as signal:USR1,HUP")
    waiter = AioSignalWaiter(parse_signal(n, endpoint.url) for n in names)
    return _AioSignalListener(endpoint.url, waiter)


async def _wait_exit(pid: int, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):  # pragma: no cover - no pidfd
        fd = -1
    try:
        while not _gone(pid):
            left = deadline - loop.time()
            if left <= 0:
                return False
            if fd < 0:  # pragma: no cover
                await asyncio.sleep(min(0.02, left))
                continue
            fut: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, _resolve, fut)
            try:
                with contextlib.suppress(TimeoutError):
                    async with within(left):
                        await fut
            finally:
                loop.remove_reader(fd)
        return True
    finally:
        if fd >= 0:
            os.close(fd)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def terminate(target: Any, timeout: float = 5.0, *, group: bool = False) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout``: as :func:`ipcwire.terminate`, without
    blocking the loop. Returns the exit status of our own children (reaped), else None.

    Raises:
        Timeout, PermissionDenied, ConfigurationError.
    """
    pid = target_pid(target)
    limit(timeout, f"signal:{pid}")  # a NaN is refused before any signal is sent
    waited = not group and exit_status(target) is not None  # its pid may be reused: no signal
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, _KILL_WAIT)):
        if waited or _gone(pid):
            break
        with contextlib.suppress(ChannelBroken):
            send_signal(pid, sig, group=group)
        if await _wait_exit(pid, wait):
            break
    else:
        raise Timeout(f"pid {pid} is still alive 5 s after SIGKILL", endpoint=f"signal:{pid}")
    if isinstance(target, subprocess.Popen):
        return target.wait()
    if isinstance(target, BaseProcess):
        return joined(target)
    aclose = getattr(target, "aclose", None)
    if aclose is not None and hasattr(target, "returncode"):
        await aclose()
        code = target.returncode
        return code if isinstance(code, int) else None
    returncode = getattr(target, "returncode", None)
    if isinstance(target, asyncio.subprocess.Process):
        return await target.wait()
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return returncode if isinstance(returncode, int) else None
    return os.waitstatus_to_exitcode(status)


class AioGracefulShutdown:
    """The asyncio :func:`ipcwire.graceful_shutdown`: on a signal, in the loop, close or call
    the resources once (awaiting ``aclose()`` and coroutine functions), remove the paths, then
    (``exit=True``) raise ``SystemExit(exit_code)`` out of the loop, so ``asyncio.run`` ends
    and ``finally`` blocks run."""

    def __init__(
        self,
        *resources: Any,
        signals: Iterable[SignalLike] = ("TERM", "INT"),
        exit: bool = True,
        exit_code: int = 0,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._resources: list[Any] = []
        self.add(*resources)
        self._exit = exit
        self._exit_code = exit_code
        self._done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.signal: signal.Signals | None = None
        parsed = parse_signals(signals)
        self._installed = _signals(self._loop).add(
            (int(s) for s in parsed), self._on_signal, signals_url(parsed)
        )

    def add(self, *resources: Any) -> None:
        """Register more resources (as in the constructor).

        Raises:
            TypeError: something that is no path, has no ``aclose()``/``close()`` and is not
                callable (as the blocking :meth:`ipcwire.signals.GracefulShutdown.add`).
        """
        for res in resources:
            if not (
                isinstance(res, str | os.PathLike)
                or callable(getattr(res, "aclose", None))
                or callable(getattr(res, "close", None))
                or callable(res)
            ):
                raise cannot_clean_up(res)
        self._resources.extend(resources)

    @property
    def requested(self) -> bool:
        """True once the shutdown started."""
        return self._task is not None

    async def wait(self) -> None:
        """Wait until the cleanup has run."""
        await self._done.wait()

    def _on_signal(self, signum: int) -> None:
        if self._task is not None:
            return
        self.signal = signal.Signals(signum)
        log.info("%s received: shutting down", self.signal.name)
        self._task = CleanupTask(self._run(exit=self._exit), loop=self._loop)

    async def shutdown(self) -> None:
        """Run the cleanup now (once)."""
        if self._task is None:
            self._task = CleanupTask(self._run(exit=False), loop=self._loop)
        await asyncio.shield(self._task)

    async def _run(self, *, exit: bool) -> None:
        try:
            try:
                with cleaning(self._loop):  # (not cut short by the end of asyncio.run())
                    await self._clean_up()
            finally:
                self._done.set()
            ended = getattr(asyncio.current_task(), "run_ended", None)
            if exit and ended is not None:  # asyncio.run() is ending: its end, then the exit
                await end_run(self._loop, ended)
        finally:
            self._uninstall()  # (a second signal until now is ignored: it is happening)
        if exit:
            self._loop.call_soon(_raise_exit, self._exit_code)

    async def _clean_up(self) -> None:
        # As the blocking shutdown: the closes and callbacks in reverse order, then the paths
        # (a socket file goes after the listener that serves it, whatever the order given)
        interrupted = self.signal is not None  # (not a call of shutdown() or aclose())
        paths = [r for r in self._resources if isinstance(r, str | os.PathLike)]
        others = [r for r in self._resources if not isinstance(r, str | os.PathLike)]
        for group in _batched([*reversed(others), *paths]):
            if len(group) == 1:
                try:
                    await _clean(group[0], interrupted)
                except Exception:
                    log.exception("graceful shutdown: cleaning up %r failed", group[0])
                except asyncio.CancelledError:  # work it awaited was cancelled, not this task
                    if _cancelling():
                        raise
                    log.exception("graceful shutdown: cleaning up %r failed", group[0])
                continue
            # a run of spawned children's channels closes together: one shutdown ladder
            # for all of them, not one each (as the blocking shutdown's close_all)
            results = await asyncio.gather(
                *(_clean(res, interrupted) for res in group), return_exceptions=True
            )
            for res, result in zip(group, results, strict=True):
                if isinstance(result, BaseException):
                    log.error(
                        "graceful shutdown: cleaning up %r failed",
                        res,
                        exc_info=result,
                    )

    def _uninstall(self) -> None:
        _signals(self._loop).remove(self._installed, self._on_signal)
        self._installed = []

    async def aclose(self) -> None:
        """Run the cleanup if it has not run, and remove the signal handlers."""
        await self.shutdown()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _batched(resources: list[Any]) -> list[list[Any]]:
    """The resources in order, each alone, except that spawned children's channels next to
    one another make one group."""
    spawn = sys.modules.get("ipcwire.spawn.aio")  # not imported: no such channel
    groups: list[list[Any]] = []
    joins = False  # the last group is spawned children's
    for res in resources:
        together = spawn is not None and isinstance(res, spawn.AioSpawnChannel)
        if together and joins:
            groups[-1].append(res)
        else:
            groups.append([res])
        joins = together
    return groups


async def _clean(res: Any, interrupted: bool = False) -> None:
    if isinstance(res, str | os.PathLike):
        Path(res).unlink(missing_ok=True)
        return
    close_interrupted = interrupted_close(res) if interrupted else None
    if close_interrupted is not None:  # a signal started it: work handed out is not done
        close_interrupted()
        return
    aclose = getattr(res, "aclose", None)
    if aclose is not None:
        await aclose()
        return
    close = getattr(res, "close", None)
    if close is not None:
        close()
        return
    result = res()
    if inspect.isawaitable(result):
        await result


def _raise_exit(code: int) -> None:
    raise SystemExit(code)


def graceful_shutdown(
    *resources: Any,
    signals: Iterable[SignalLike] = ("TERM", "INT"),
    exit: bool = True,
    exit_code: int = 0,
) -> AioGracefulShutdown:
    """The asyncio graceful shutdown (call inside the running loop, in the main thread).

    Raises:
        ConfigurationError: the loop cannot handle signals (not the main thread).
        TypeError: a resource that cannot be cleaned up.
    """
    return AioGracefulShutdown(*resources, signals=signals, exit=exit, exit_code=exit_code)

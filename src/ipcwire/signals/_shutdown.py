"""``ipcwire.graceful_shutdown``: SIGTERM/SIGINT become an orderly exit.

::

    with ipcwire.listen("unix:///run/app.sock") as server, \\
            ipcwire.graceful_shutdown(server, flush_cache, "/run/app.pid"):
        server.serve(handler)      # returns once SIGTERM closed the listener

On the first of the signals, a watcher thread (never the signal handler) runs the shutdown,
once: the registered callbacks and ``close()`` of the registered channels and listeners, in
reverse order of registration (like :class:`contextlib.ExitStack`); then it removes the
registered paths (socket files, pid files) that still exist. With ``exit=True`` (the default)
the main thread then raises ``SystemExit(exit_code)`` wherever it is, so ``finally`` blocks
and ``atexit`` handlers run; if it has not exited ``timeout`` seconds later the process exits
with ``os._exit``. A second signal during the shutdown is ignored (it is already happening).
Leaving the ``with`` block (or interpreter exit, for a helper that is not used as a context
manager) runs the same cleanup, once; when a signal ended the block and ``exit`` is set, it
raises ``SystemExit(exit_code)``, so the code after the block does not run.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ipcwire._poll import wait_readable
from ipcwire.errors import ChannelClosed
from ipcwire.signals._dispatch import dispatcher, request_exit
from ipcwire.signals._names import SignalLike, parse_signals, signals_url
from ipcwire.signals._served import wait_served

__all__ = ["GracefulShutdown", "cannot_clean_up", "graceful_shutdown", "interrupted_close"]

log = logging.getLogger("ipcwire")


class GracefulShutdown:
    """Runs cleanup once, on a signal or on leaving its ``with`` block. See the module."""

    def __init__(
        self,
        *resources: Any,
        signals: Iterable[SignalLike] = ("TERM", "INT"),
        exit: bool = True,
        exit_code: int = 0,
        timeout: float = 10.0,
    ) -> None:
        self._steps: list[tuple[str, Callable[[], object], Any]] = []  # (what, step, resource)
        self._paths: list[Path] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._ran = False
        self._exit = exit
        self._exit_code = exit_code
        self._timeout = timeout
        self.signal: signal.Signals | None = None  # the signal that triggered the shutdown
        self._stopping = False
        self._owner_closing = False
        self._triggered = False  # the watcher saw a signal (it may be waiting for main to exit)
        self.add(*resources)
        self._signals = tuple(parse_signals(signals))
        self._sub = dispatcher.subscribe(
            (int(s) for s in self._signals), signals_url(self._signals)
        )
        self._watcher = threading.Thread(
            target=self._watch, name="ipcwire graceful shutdown", daemon=True
        )
        self._watcher.start()
        self._pid = os.getpid()  # a forked child's exit is not this process's
        atexit.register(self._at_exit)

    # -- registering ----------------------------------------------------------------------
    def add(self, *resources: Any) -> None:
        """Register channels/listeners (anything with ``close()``), callables (called with
        no arguments) and paths (``str``/``os.PathLike``: removed if they exist).

        Raises:
            TypeError: something that is none of these.
        """
        for res in resources:
            if isinstance(res, str | os.PathLike):
                self._paths.append(Path(res))
            elif hasattr(res, "close") and callable(res.close):
                self._steps.append((f"closing {res!r}", res.close, res))
            elif callable(res):
                self._steps.append((f"calling {getattr(res, '__name__', res)!r}", res, None))
            else:
                raise cannot_clean_up(res)

    def callback(self, fn: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """Register ``fn(*args, **kwargs)`` to run at shutdown."""
        self._steps.append(
            (f"calling {getattr(fn, '__name__', fn)!r}", lambda: fn(*args, **kwargs), None)
        )

    # -- state ----------------------------------------------------------------------------
    @property
    def requested(self) -> bool:
        """True once a shutdown started (a signal arrived, or :meth:`shutdown` was called)."""
        return self._ran

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the cleanup has run (True) or ``timeout`` passed (False)."""
        return self._done.wait(timeout)

    # -- running --------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Run the cleanup now (once; later calls wait for the first to finish)."""
        with self._lock:
            if self._ran:
                first = False
            else:
                self._ran = first = True
        if not first:
            self._done.wait(self._timeout)
            return
        steps = list(reversed(self._steps))
        if self.signal is not None:  # interrupted: work handed out is not done
            steps = [(what, interrupted_close(res) or step, res) for what, step, res in steps]
        try:
            for what, step in _batched(steps):
                try:
                    step()
                except Exception:
                    log.exception("graceful shutdown: %s failed", what)
            for path in self._paths:
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:
                    log.warning("graceful shutdown: cannot remove %s: %s", path, exc)
        finally:
            self._done.set()

    def _watch(self) -> None:
        sub = self._sub
        while True:
            wait_readable(sub.waker.fd)
            sub.waker.drain()
            if self._stopping:
                return
            taken = sub.take()
            if taken is not None:
                signum = taken
                break
        self._triggered = True
        if self._ran:
            return
        self.signal = signal.Signals(signum)
        log.info("%s received: shutting down", self.signal.name)
        self.shutdown()
        if self._exit:  # a serve() still closing its channels finishes first (_served.py)
            wait_served([res for _, _, res in self._steps], self._timeout)
        with self._lock:
            interrupt = self._exit and not self._owner_closing
        if interrupt:  # otherwise the owner is leaving its with-block: __exit__ exits
            request_exit(self._exit_code, signum)
            if not _main_exited(self._timeout):
                log.error(
                    "the main thread did not exit within %.1f s of the shutdown; exiting now",
                    self._timeout,
                )
                os._exit(self._exit_code)

    def close(self) -> None:
        """Run the cleanup if it has not run, and restore the previous signal handlers."""
        with self._lock:
            self._owner_closing = True
        self.shutdown()
        self._uninstall()

    def _uninstall(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._sub.waker.wake()
        if not self._triggered and self._watcher is not threading.current_thread():
            self._watcher.join(1.0)
        dispatcher.unsubscribe(self._sub)
        if not self._watcher.is_alive():
            self._sub.waker.close()
        with contextlib.suppress(ValueError):
            atexit.unregister(self._at_exit)

    def _at_exit(self) -> None:
        if os.getpid() == self._pid:  # not in a forked child: the resources are the parent's
            self.shutdown()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        # A signal ended the block: the process exits. The shutdown's close() of a registered
        # channel wakes a recv() in the block with ChannelClosed, which can reach here before
        # the SystemExit the watcher sends (which then does not come: the owner is closing):
        # that is the shutdown, not the program's failure.
        if self._exit and self.signal is not None and (et is None or issubclass(et, ChannelClosed)):
            raise SystemExit(self._exit_code) from None


def interrupted_close(res: Any) -> Callable[[], object] | None:
    """What closes ``res`` in a shutdown a signal started, if not its ``close()``: the
    ``_close_interrupted()`` of a resource that hands out work (a spool channel), which gives
    back the work it handed out and not finished rather than taking it as done."""
    close = getattr(res, "_close_interrupted", None)
    return close if callable(close) else None


def _batched(
    steps: list[tuple[str, Callable[[], object], Any]],
) -> list[tuple[str, Callable[[], object]]]:
    """The steps, with each run of spawned children's channels next to one another closed
    together by ``close_all`` (one shutdown ladder for all of them, not one each)."""
    spawn = sys.modules.get("ipcwire.spawn.blocking")  # not imported: no such channel
    out: list[tuple[str, Callable[[], object]]] = []
    run: list[Any] = []

    def flush() -> None:
        if len(run) == 1:
            out.append((f"closing {run[0]!r}", run[0].close))
        elif run and spawn is not None:
            out.append((f"closing {len(run)} spawned children", partial(spawn.close_all, run[:])))
        run.clear()

    for what, step, res in steps:
        if spawn is not None and isinstance(res, spawn.SpawnChannel):
            run.append(res)
            continue
        flush()
        out.append((what, step))
    flush()
    return out


def cannot_clean_up(res: Any) -> TypeError:
    """The error for a resource that is no path, has no ``close()`` and is not callable."""
    return TypeError(
        f"graceful_shutdown cannot clean up {res!r}: pass something with close(), "
        f"a callable, or a path"
    )


def _main_exited(timeout: float) -> bool:
    main = threading.main_thread()
    main.join(timeout)
    return not main.is_alive()


def graceful_shutdown(
    *resources: Any,
    signals: Iterable[SignalLike] = ("TERM", "INT"),
    exit: bool = True,
    exit_code: int = 0,
    timeout: float = 10.0,
) -> GracefulShutdown:
    """Turn ``signals`` (SIGTERM and SIGINT by default) into an orderly shutdown.

    ``resources``: channels and listeners (closed), callables (called), paths (removed), in
    any mix; more with :meth:`GracefulShutdown.add`. On a signal they are cleaned up once, in
    reverse order, from a watcher thread; then, with ``exit``, the process exits with
    ``exit_code`` (the main thread gets ``SystemExit`` so ``finally`` and ``atexit`` run;
    after ``timeout`` seconds it is ``os._exit``). Call it from the main thread.

    Raises:
        ConfigurationError: not called from the main thread, or an uncatchable signal.
        TypeError: a resource that cannot be cleaned up.
    """
    return GracefulShutdown(
        *resources, signals=signals, exit=exit, exit_code=exit_code, timeout=timeout
    )

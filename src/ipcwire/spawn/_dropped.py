"""Children of spawn channels collected without ``close()``: their ladder, in the background.

A channel's ``__del__`` must not wait (it runs wherever the garbage collector runs), nor take
a lock (the collector may run while that very thread holds it). So it closes the child's
stdin, emits a ``ResourceWarning`` as an unclosed socket does, and hands the child over with
:func:`hand_over` (a ``SimpleQueue`` put, made for finalizers). A reaper thread, started with
the first channel (:func:`start_reaper`), runs each child's shutdown ladder in a thread of its
own: a child that ignores the end of stdin delays nobody else's.

At interpreter exit (which collects the garbage first) the children not taken up yet join the
shared exit ladder, and the ladders under way are waited for (no longer than the exit's own
ladder, then SIGKILL), as the ladders of other threads are. A channel collected later still
(in the interpreter's last collections) runs its ladder in the collecting thread, with the
exit's short waits: no thread would finish it.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
import time

from ipcwire.spawn._process import (
    LadderChild,
    exit_started,
    exit_timeouts,
    kill_group,
    log,
    run_ladders,
    shut_down_at_exit,
)

__all__ = ["hand_over", "start_reaper"]

_queue: queue.SimpleQueue[LadderChild | None] = queue.SimpleQueue()  # None: reaper, stop
_running: dict[LadderChild, threading.Event] = {}  # ladders under way: set once each is over
_late: list[LadderChild] = []  # taken by the reaper once the exit had begun
_lock = threading.Lock()  # the reaper's and the exit's (never taken by a finalizer)
_gathered = False  # ...and has them: a child handed over now is shut down by the caller
_reaper: threading.Thread | None = None


def start_reaper() -> None:
    """Start the reaper thread if it is not running (called when a channel is made, never
    from a finalizer)."""
    global _reaper
    if _reaper is not None:
        return
    with _lock:
        if _reaper is None:
            thread = threading.Thread(target=_reap, name="ipcwire spawn reaper", daemon=True)
            thread.start()
            _reaper = thread


def hand_over(child: LadderChild) -> None:
    """Shut ``child`` down in the background (its stdin is closed already). Safe to call
    from ``__del__``: it neither blocks nor takes a lock, except once the exit has gathered
    its children: then it runs the ladder (the exit's short one) itself."""
    if _gathered:
        child.timeouts = exit_timeouts(child.timeouts)
        run_ladders([child], at_exit=True)
        return
    _queue.put(child)


def _reap() -> None:
    while _take(_queue.get()):  # (no local keeps a child: a thread still there when the
        pass  # interpreter ends would keep it, and its stderr sink, a file, would stay unflushed)


def _take(child: LadderChild | None) -> bool:
    """Start ``child``'s ladder; False: the reaper stops."""
    if child is None:
        return False
    with _lock:
        if exit_started():  # the exit's ladder takes it (or _wait_for_ladders)
            _late.append(child)
            return True
        done = threading.Event()
        _running[child] = done
    previous = child.on_done

    def finish() -> None:
        try:
            if previous is not None:
                previous()
        finally:
            done.set()

    child.on_done = finish
    name = f"ipcwire-spawn-{child.pgid}-dropped"
    try:
        threading.Thread(target=_ladder, args=(child,), name=name, daemon=True).start()
    except RuntimeError:  # the interpreter is exiting (3.12+ starts no thread): run it here
        _ladder(child)
    return True


def _ladder(child: LadderChild) -> None:
    try:
        run_ladders([child])
    except Exception:  # pragma: no cover - a thread's exception would only be printed
        log.exception("shutting down the child pid %d of a dropped channel failed", child.pgid)
    finally:
        _running.pop(child, None)


def _take_waiting() -> list[LadderChild]:
    """The children handed over and not started, with the exit's waits. Holds ``_lock``."""
    children, _late[:] = list(_late), []
    with contextlib.suppress(queue.Empty):
        while True:
            child = _queue.get_nowait()
            if child is not None:
                children.append(child)
    for child in children:
        child.timeouts = exit_timeouts(child.timeouts)
    return children


def _children_at_exit() -> list[LadderChild]:
    """Asked last by the exit (after its garbage collection): the children handed over and
    not taken up yet go through the exit's shared ladder."""
    global _gathered
    with _lock:
        children = _take_waiting()
        _gathered = True
    return children


def _wait_for_ladders() -> None:
    """After the exit's ladder: wait for the ladders under way (they run in daemon threads,
    stopped once the interpreter finalizes), no longer than the exit's own ladder; then
    SIGKILL the groups left, and a last wait. Last, the children handed over meanwhile."""
    running = dict(_running)
    if running:
        cap = max(exit_timeouts(child.timeouts).bound for child in running)
        deadline = time.monotonic() + cap + 1.0
        late = [
            c for c, done in running.items() if not done.wait(max(0.0, deadline - time.monotonic()))
        ]
        for child in late:
            if child.watch.proc.returncode is None:  # not reaped: its pid is still its own
                kill_group(child.pgid, signal.SIGKILL)
        deadline = time.monotonic() + max((c.timeouts.kill for c in late), default=0.0) + 1.0
        for child in late:
            running[child].wait(max(0.0, deadline - time.monotonic()))
    reaper = _reaper
    if reaper is not None:  # stopped: a thread left at the end keeps what it referenced
        _queue.put(None)
        reaper.join(timeout=1.0)
    with _lock:
        rest = _take_waiting()
    if rest:
        run_ladders(rest, at_exit=True)


def _forget() -> None:
    """In a forked process: the children are its parent's; the reaper thread is not there."""
    global _queue, _reaper, _lock
    _queue = queue.SimpleQueue()
    _running.clear()
    _late.clear()
    _reaper = None
    _lock = threading.Lock()


shut_down_at_exit(_children_at_exit, _wait_for_ladders, last=True)
os.register_at_fork(after_in_child=_forget)

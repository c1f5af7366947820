"""The process-wide signal dispatcher behind :class:`SignalWaiter` and ``graceful_shutdown``.

How a signal travels, safely:

1. The kernel interrupts the process; CPython's C-level handler writes the signal number to
   the *wakeup fd* (``signal.set_wakeup_fd``): async-signal-safe, immediate, even while the
   main thread is busy in C code.
2. A dispatcher thread reads the wakeup fd and hands each number to the subscriptions that
   asked for it (a queue and an eventfd each). Nothing else runs in signal context.
3. The Python-level handler, which CPython runs later in the main thread, only keeps the
   signal's default action from happening while someone subscribes. When nobody does any more
   (a subscription closed from a thread that may not reinstall handlers), it behaves as the
   previous handler did, so SIGTERM is never swallowed. It takes no lock (it may interrupt
   the main thread anywhere, even inside this module).

The wakeup fd has one owner per process. When another owner has it (an asyncio loop with
signal handlers in the main thread), the dispatcher leaves it theirs, and the Python-level
handler hands the signal to the subscriptions itself (the loop runs handlers promptly);
it notices by swapping the fd, so an owner that came or went later is handled too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

from ipcwire._poll import wait_readable
from ipcwire.errors import ConfigurationError
from ipcwire.pipe._fdutil import Waker, make_pipe, set_nonblocking
from ipcwire.signals._names import check_catchable, warn_taken_over

__all__ = ["Subscription", "dispatcher", "request_exit"]

Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class Subscription:
    """Signals delivered to one waiter: a queue and a waker fd (the owner closes the waker,
    once no thread waits on it).

    A signal not yet taken is queued once (as the kernel keeps a standard signal pending
    once): its repeats are counted in ``coalesced``, so the queue holds at most one entry
    per signal number whatever a signal storm sends. :meth:`deliver` takes no lock (the
    Python-level handler may call it in the main thread while that thread is in :meth:`take`);
    :meth:`take` forgets the pending mark before it pops the entry, so a repeat that comes in
    between is queued again, never lost."""

    def __init__(self, signums: frozenset[int]) -> None:
        self.signums = signums
        self.queue: deque[int] = deque()
        self.pending: dict[int, object] = {}  # the signals in the queue
        self.coalesced = 0
        self.waker = Waker()
        self.closed = False
        self._taking = threading.Lock()  # one taker at a time (deliver never takes it)

    def deliver(self, signum: int) -> None:
        mark = object()
        if self.pending.setdefault(signum, mark) is not mark:  # atomic: queued already
            self.coalesced += 1
            return
        self.queue.append(signum)
        self.waker.wake()

    def take(self) -> int | None:
        """The oldest signal not taken yet, or None."""
        with self._taking:
            if not self.queue:
                return None
            signum = self.queue[0]
            self.pending.pop(signum, None)
            return self.queue.popleft()


class _Dispatcher:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: tuple[Subscription, ...] = ()  # replaced whole: the handler reads it lock-free
        self._previous: dict[int, Handler] = {}  # signum -> handler before ours
        self._wake_r: int | None = None
        self._wake_w: int | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()  # ends the thread (one Event per thread started)
        self.exit_code: int | None = None  # set by request_exit(): the handler raises
        self._fork_mask: set[int | signal.Signals] | None = None  # the mask before fork()
        self._handling = False  # the handler runs (main thread only): a nested call notes
        self._again: dict[int, None] = {}  # its signal here, for the outer call to handle

    # -- subscribing (main thread) ----------------------------------------------------------
    def subscribe(self, signums: Iterable[int], url: str) -> Subscription:
        """Start handling ``signums`` for a new subscriber, ``url`` (``signal:USR1,HUP``).

        Raises:
            ConfigurationError: an uncatchable signal, or not the main thread.
        """
        wanted = frozenset(signums)
        check_catchable(wanted, url)
        if threading.current_thread() is not threading.main_thread():
            raise ConfigurationError(
                f"{url}: signal handlers can only be installed from the main thread: create "
                f"the SignalWaiter / graceful_shutdown there (waiting works from any thread)",
                endpoint=url,
            )
        sub = Subscription(wanted)
        with self._lock:
            self._ensure_started()
            for signum in wanted:
                if signum not in self._previous:
                    self._previous[signum] = signal.signal(signum, self._handler)
                    warn_taken_over(signum, self._previous[signum], url)
                elif signal.getsignal(signum) is not self._handler:
                    signal.signal(signum, self._handler)
            self._subs = (*self._subs, sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub.closed:
                return
            sub.closed = True
            self._subs = tuple(s for s in self._subs if s is not sub)
            still = {s for other in self._subs for s in other.signums}
            if threading.current_thread() is threading.main_thread():
                for signum in [s for s in self._previous if s not in still]:
                    previous = self._previous.pop(signum)
                    with contextlib.suppress(TypeError, ValueError, OSError):
                        signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
                if not self._previous:  # none of our handlers is left: nor the rest
                    self._stop()

    # -- the wakeup fd and the thread -------------------------------------------------------
    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        r, w = make_pipe(grow=False)
        set_nonblocking(r)
        set_nonblocking(w)
        self._wake_r, self._wake_w = r, w
        self._owns_wakeup()  # unless someone else (an asyncio loop) has it
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(r, self._stopping), name="ipcwire signals", daemon=True
        )
        self._thread.start()

    def _stop(self) -> None:
        """Once the last subscription is gone (main thread, under the lock): give the wakeup
        fd back (Python's default: none), end the thread and close the pipe. They stayed for
        the process's life: the wakeup fd still ours, for a library that takes it next (trio
        warns when it finds one set), a thread and two fds. The next subscription starts
        them again."""
        r, w, thread = self._wake_r, self._wake_w, self._thread
        if r is None or w is None or thread is None:
            return
        with contextlib.suppress(ValueError, OSError):
            current = signal.set_wakeup_fd(-1)
            if current not in (-1, w):
                signal.set_wakeup_fd(current)  # another owner's (an asyncio loop's)
        self._stopping.set()
        with contextlib.suppress(OSError):
            os.write(w, b"\0")  # (not a signal number: only wakes the thread)
        thread.join(5.0)
        if not thread.is_alive():  # (else it would read a closed, maybe reused, fd)
            for fd in (r, w):
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._wake_r = self._wake_w = None
        self._thread = None

    def _run(self, r: int, stopping: threading.Event) -> None:
        while not stopping.is_set():
            wait_readable(r)
            try:
                data = os.read(r, 512)
            except BlockingIOError:
                continue
            except OSError:
                return
            subs = self._subs
            for signum in data:
                for sub in subs:
                    if signum in sub.signums:
                        sub.deliver(signum)

    # -- the Python-level handler (main thread, outside signal context) ----------------------
    def _owns_wakeup(self) -> bool:
        """Make our pipe the wakeup fd unless another owner has it; True if it was ours
        already (then the dispatcher thread has this signal). Main thread only."""
        w = self._wake_w
        if w is None:
            return False
        current = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        if current not in (-1, w):
            signal.set_wakeup_fd(current)  # theirs (an asyncio loop): leave it theirs
        return current == w

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        """The Python-level handler. CPython runs it again inside itself when another signal
        comes while it runs; in a storm that nested without bound, and a ``RecursionError``
        came out of whatever the main thread was doing. A nested call only notes its signal
        (one entry per number), which the outermost call then handles."""
        if self._handling:
            self._again[signum] = None
            return
        while True:
            self._handling = True
            try:
                self._handle(signum, frame)
                while self._again:
                    signum = next(iter(self._again))
                    del self._again[signum]
                    self._handle(signum, frame)
            finally:
                self._handling = False
            if not self._again:  # (one noted just before the flag went down)
                return
            signum = next(iter(self._again))
            del self._again[signum]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.exit_code is not None:
            raise SystemExit(self.exit_code)
        wanted = [s for s in self._subs if signum in s.signums]
        if wanted:
            if not self._owns_wakeup():  # the byte went to another owner, or nowhere
                for sub in wanted:
                    sub.deliver(signum)
            return
        previous = self._previous.get(signum)
        # Nobody waits for it any more: behave as before we were installed.
        if callable(previous):
            previous(signum, frame)
        elif previous in (signal.SIG_DFL, None):
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    # -- fork -----------------------------------------------------------------------------
    def before_fork(self) -> None:
        """Hold our signals back across fork() in the forking thread (the child inherits its
        mask): one that reached the child before :meth:`after_fork_in_child` would be taken
        by the parent's handlers, its byte written to the parent's wakeup pipe."""
        self._fork_mask = None
        if self._previous:
            with contextlib.suppress(ValueError, OSError):
                self._fork_mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(self._previous))

    def after_fork_in_parent(self) -> None:
        if self._fork_mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._fork_mask)

    def after_fork_in_child(self) -> None:
        """A forked child has none of the parent's waiters (their threads, and this
        dispatcher's, stayed in the parent), yet it inherited the handlers, which would keep
        swallowing the signals for them: a child of a process with a graceful shutdown ignored
        SIGTERM. Start over: the previous handlers, no subscription, no thread; then the
        signals held back during the fork arrive (a SIGTERM ends the child)."""
        self._reset_in_child()
        if self._fork_mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._fork_mask)

    def _reset_in_child(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it at the fork
        self._subs = ()
        self.exit_code = None
        self._handling = False
        self._again = {}
        for signum, previous in self._previous.items():
            with contextlib.suppress(TypeError, ValueError, OSError):
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}
        r, w = self._wake_r, self._wake_w
        if r is not None and w is not None:
            with contextlib.suppress(ValueError, OSError):
                current = signal.set_wakeup_fd(-1)
                if current not in (-1, w):
                    signal.set_wakeup_fd(current)  # another owner's (an asyncio loop's)
            for fd in (r, w):
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._wake_r = self._wake_w = None
        self._thread = None


dispatcher = _Dispatcher()
os.register_at_fork(
    before=dispatcher.before_fork,
    after_in_parent=dispatcher.after_fork_in_parent,
    after_in_child=dispatcher.after_fork_in_child,
)


def request_exit(code: int, signum: int) -> None:
    """Make the main thread raise ``SystemExit(code)`` now: a real signal interrupts whatever
    blocking call it is in, and the handler raises (used after an orderly shutdown)."""
    dispatcher.exit_code = code
    main = threading.main_thread()
    if main.ident is not None and main.is_alive():
        with contextlib.suppress(OSError, ValueError):
            signal.pthread_kill(main.ident, signum)

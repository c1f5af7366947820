"""Stop a thread at one line of the real code until the test lets it go (no sleeps, no seams).

::

    gate = PauseAt(FileLock._try, "fcntl.flock(fd, op)")
    t = gate.start(FileLock(path).acquire, 0)   # runs in a thread, stops before that line
    gate.reached.wait(10)                       # it is there now
    ...                                         # do what must happen in between
    gate.go()
    result = gate.join()                        # its return value, or raises what it raised

The thread traces itself (``sys.settrace``, per thread): only frames of the given function
are followed, and only the first time the line is reached pauses.
"""

from __future__ import annotations

import inspect
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

_LIMIT = 30.0  # a stuck test fails instead of hanging


class PauseAt:
    """Pause the thread started by :meth:`start` before the line of ``func`` containing
    ``text`` (which must occur exactly once in ``func``'s source); with ``when``, only in a
    call whose frame it accepts (``lambda f: f.f_locals["self"] is obj``)."""

    def __init__(
        self,
        func: Callable[..., Any],
        text: str,
        *,
        when: Callable[[FrameType], bool] | None = None,
    ) -> None:
        code = func.__code__
        lines, first = inspect.getsourcelines(func)
        found = [first + i for i, line in enumerate(lines) if text in line]
        assert len(found) == 1, f"{text!r} occurs {len(found)} times in {func.__qualname__}"
        self._code = code
        self._line = found[0]
        self._when = when
        self.reached = threading.Event()
        self._reached_or_ended = threading.Event()
        self._go = threading.Event()
        self._result: list[Any] = []
        self._error: list[BaseException] = []
        self._thread: threading.Thread | None = None

    def _global(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event != "call" or frame.f_code is not self._code or self.reached.is_set():
            return None
        return self._local if self._when is None or self._when(frame) else None

    def _local(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line" and frame.f_lineno == self._line and not self.reached.is_set():
            self.reached.set()
            self._reached_or_ended.set()
            if not self._go.wait(_LIMIT):
                raise AssertionError("PauseAt: the test never let the thread go")
        return self._local

    def start(self, fn: Callable[..., Any], *args: Any) -> threading.Thread:
        """Run ``fn(*args)`` in a new thread that pauses at the line."""

        def body() -> None:
            sys.settrace(self._global)
            try:
                self._result.append(fn(*args))
            except BaseException as exc:
                self._error.append(exc)
            finally:
                sys.settrace(None)
                self._reached_or_ended.set()

        self._thread = threading.Thread(target=body, daemon=True)
        self._thread.start()
        return self._thread

    def wait_reached(self) -> None:
        """Block until the thread stands at the line (fail if it ends without)."""
        assert self._reached_or_ended.wait(_LIMIT), "the thread never reached the line"
        if not self.reached.is_set():
            raise AssertionError("the thread ended without reaching the line") from (
                self._error[0] if self._error else None
            )

    def go(self) -> None:
        """Let the paused thread run on."""
        self._go.set()

    def join(self) -> Any:
        """Let it go if not yet, wait for the thread; its result, or raise its exception."""
        self.go()
        assert self._thread is not None
        self._thread.join(_LIMIT)
        assert not self._thread.is_alive(), "the paused thread did not finish"
        if self._error:
            raise self._error[0]
        return self._result[0]

"""Where a child's stderr goes. It is never a pipe that nobody reads.

``stderr=`` accepts:

* ``None`` (default): the parent's own stderr (the child writes to it directly);
* ``subprocess.DEVNULL`` or ``False``: discarded;
* a path (``str``/``os.PathLike``): appended to that file (created 0600);
* an ``int`` fd or a file object with ``fileno()``: written there directly;
* a :class:`logging.Logger`: one record per line, at INFO, prefixed with the child's pid;
* a callable: called with each line (``str``, without the newline) from a reader thread
  (blocking API) or the event loop (asyncio);
* a text stream without ``fileno()`` (``io.StringIO``): each line written to it.

``subprocess.PIPE`` (the classic deadlock: a pipe nobody drains fills at 64 KiB and the child
blocks) and ``subprocess.STDOUT`` (it would corrupt the protocol stream) are refused.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import os
import select
import subprocess
import threading
from collections.abc import Callable
from typing import IO, Any, Final

from ipcwire.errors import ConfigurationError
from ipcwire.pipe._fdutil import Waker, make_pipe

__all__ = ["LineSink", "StderrPlan", "StderrPump", "plan_stderr"]

LineSink = Callable[[str], object]
MAX_LINE: Final = 64 * 1024  # longer lines are passed on in pieces of this size


class StderrPlan:
    """What to give Popen as ``stderr``, and the line sink when the parent must read it."""

    def __init__(self, popen_arg: int | None, sink: LineSink | None, close_fd: int | None):
        self.popen_arg = popen_arg
        self.sink = sink
        self._close_fd = close_fd  # a file we opened for the child; closed after the spawn
        self.read_fd: int | None = None

    def start(self) -> int | None:
        """Make the pipe when lines go to a sink; returns the fd the child gets."""
        if self.sink is None:
            return self.popen_arg
        self.read_fd, write_fd = make_pipe(grow=False)
        self._close_fd = write_fd
        return write_fd

    def after_spawn(self) -> None:
        """Close the parent's copy of what the child now holds."""
        if self._close_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._close_fd)
            self._close_fd = None

    def abandon(self) -> None:
        """The spawn failed: close everything."""
        self.after_spawn()
        if self.read_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.read_fd)
            self.read_fd = None


def _logger_sink(logger: logging.Logger, name: str) -> LineSink:
    def sink(line: str) -> None:
        logger.info("%s: %s", name, line)

    return sink


def _stream_sink(stream: IO[str]) -> LineSink:
    def sink(line: str) -> None:
        stream.write(line + "\n")

    return sink


def plan_stderr(stderr: Any, name: str) -> StderrPlan:
    """Resolve a ``stderr=`` argument.

    Raises:
        ConfigurationError: PIPE or STDOUT, or something that is none of the accepted kinds.
    """
    if stderr is None:
        return StderrPlan(None, None, None)
    if stderr is False or stderr == subprocess.DEVNULL:
        return StderrPlan(subprocess.DEVNULL, None, None)
    if stderr == subprocess.PIPE:
        raise ConfigurationError(
            "stderr=subprocess.PIPE would leave the child's stderr to fill and block it; "
            "pass a callable, a logger, a file or a path, and ipcwire drains it"
        )
    if stderr == subprocess.STDOUT:
        raise ConfigurationError(
            "stderr=subprocess.STDOUT would mix the child's stderr into the protocol stream; "
            "pass a callable, a logger, a file or a path instead"
        )
    if isinstance(stderr, bool):
        raise ConfigurationError("stderr=True means nothing; pass None for the parent's stderr")
    if isinstance(stderr, int):
        return StderrPlan(stderr, None, None)
    if isinstance(stderr, str | os.PathLike):
        fd = os.open(
            os.fspath(stderr), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
        )
        return StderrPlan(fd, None, fd)
    if isinstance(stderr, logging.Logger):
        return StderrPlan(None, _logger_sink(stderr, name), None)
    fileno = getattr(stderr, "fileno", None)
    if fileno is not None:
        try:
            fd = int(fileno())
        except (OSError, ValueError):
            fd = -1
        if fd >= 0:
            with contextlib.suppress(Exception):
                stderr.flush()
            return StderrPlan(fd, None, None)
    if hasattr(stderr, "write"):
        return StderrPlan(None, _stream_sink(stderr), None)
    if callable(stderr):
        return StderrPlan(None, stderr, None)
    raise ConfigurationError(
        f"stderr={stderr!r}: pass None (the parent's stderr), DEVNULL, a path, a file, "
        f"a logging.Logger or a callable taking each line"
    )


class LineSplitter:
    """Bytes in, whole lines (``str``) out to the sink; sink errors are logged, not raised:
    the first with its traceback, the others counted and told once, at the end (a broken
    callback must not turn every line of a chatty child into a traceback)."""

    def __init__(self, sink: LineSink, name: str = "the child") -> None:
        self._sink = sink
        self._name = name
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._partial = ""
        self._failures = 0

    def feed(self, data: bytes) -> None:
        text = self._partial + self._decoder.decode(data)
        *lines, self._partial = text.split("\n")
        while len(self._partial) > MAX_LINE:
            lines.append(self._partial[:MAX_LINE])
            self._partial = self._partial[MAX_LINE:]
        for line in lines:
            self._emit(line)

    def finish(self) -> None:
        rest = self._partial + self._decoder.decode(b"", final=True)
        self._partial = ""
        if rest:
            self._emit(rest)
        if self._failures > 1:
            logging.getLogger("ipcwire").error(
                "the stderr callback for %s raised %d more times (the first is logged "
                "above); those lines of its stderr were lost",
                self._name,
                self._failures - 1,
            )
        self._failures = 0

    def _emit(self, line: str) -> None:
        try:
            self._sink(line.removesuffix("\r"))
        except Exception:
            self._failures += 1
            if self._failures == 1:
                logging.getLogger("ipcwire").exception(
                    "the stderr callback for %s raised (its later errors are counted, "
                    "not logged); fix the callback, or pass a logger or a file as stderr=",
                    self._name,
                )


class StderrPump:
    """A thread that reads the child's stderr into a sink until EOF or :meth:`stop`."""

    def __init__(self, fd: int, sink: LineSink, name: str) -> None:
        self._fd = fd
        self._lines = LineSplitter(sink, name)
        self._waker = Waker()
        self._waker_lock = threading.Lock()  # the waker is closed once, never woken after
        self._waker_closed = False
        self._stopping = False
        self._thread = threading.Thread(
            target=self._run, name=f"ipcwire stderr {name}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._waker.fd, select.POLLIN)
        budget = 1 << 20  # after stop(): what we still read, at most (a writer that never ends)
        try:
            while True:
                events = dict(poller.poll())
                if self._stopping:
                    budget -= 65536
                    if budget < 0:
                        break
                if self._fd in events:
                    try:
                        data = os.read(self._fd, 65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        break
                    self._lines.feed(data)
                elif self._stopping:
                    break
        finally:
            self._lines.finish()
            with contextlib.suppress(OSError):
                os.close(self._fd)
            if self._stopping:  # stop() was called: it may have left the waker to us
                self._close_waker()

    def _wake(self) -> None:
        with self._waker_lock:
            if not self._waker_closed:
                self._waker.wake()

    def _close_waker(self) -> None:
        with self._waker_lock:
            if not self._waker_closed:
                self._waker_closed = True
                self._waker.close()

    def stop(self, timeout: float = 1.0) -> None:
        """Deliver what is already in the pipe, then stop (bounded). Idempotent. Called from
        the sink itself (a callback that closes the channel), it only asks the thread to
        stop once the callback returns."""
        if threading.current_thread() is self._thread:
            self._stopping = True
            self._wake()
            return
        self._thread.join(timeout=0.05)  # usually at EOF already: the group is gone
        if self._thread.is_alive():
            self._stopping = True
            self._wake()
            self._thread.join(timeout=timeout)
        if not self._thread.is_alive():
            self._close_waker()

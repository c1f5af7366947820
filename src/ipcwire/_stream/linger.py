"""Goodbye frames that did not fit at ``close()``: written when the peer makes room.

A blocking ``close()`` writes its goodbye frame (docs/protocol.md section 5) without waiting.
When the peer has not read for a while its socket buffer is full: rather than make
``close()`` wait, or drop the goodbye (the peer would then take a clean close for a crash
once it has read the rest), the socket is handed to one background thread, which writes the
rest of the goodbye when there is room and then closes the socket. The kernel already keeps
delivering the messages written before; this keeps the goodbye behind them.

A socket lingers at most ``LINGER`` seconds, and not after its peer hung up. At interpreter
exit the lingering goodbyes get at most ``EXIT_WAIT`` seconds in all (exit never hangs on a
peer that does not read); a forked child closes its copies of the lingering sockets.
"""

from __future__ import annotations

import atexit
import os
import select
import socket
import threading
import time
from dataclasses import dataclass
from typing import Final

__all__ = ["EXIT_WAIT", "LINGER", "hand_over", "lingering"]

LINGER: Final = 60.0
EXIT_WAIT: Final = 1.0
_NOSIGNAL: Final = getattr(socket, "MSG_NOSIGNAL", 0) | getattr(socket, "MSG_DONTWAIT", 0)
_DONE: Final = select.POLLERR | select.POLLHUP | select.POLLNVAL


@dataclass
class _Item:
    sock: socket.socket
    rest: memoryview
    deadline: float


class _Lingerer:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.items: dict[int, _Item] = {}
        self.wake: tuple[int, int] | None = None  # a pipe that wakes the thread's poll

    def add(self, sock: socket.socket, rest: bytes) -> None:
        with self.cond:
            self.items[sock.fileno()] = _Item(sock, memoryview(rest), time.monotonic() + LINGER)
            if self.wake is None:
                self.wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
                threading.Thread(target=self._run, name="ipcwire goodbyes", daemon=True).start()
            else:
                try:
                    os.write(self.wake[1], b"x")
                except BlockingIOError:
                    pass  # a wake-up is already pending

    def _run(self) -> None:
        assert self.wake is not None
        wake = self.wake[0]
        while True:
            with self.cond:
                items = dict(self.items)
            poller = select.poll()
            poller.register(wake, select.POLLIN)
            for fd in items:
                poller.register(fd, select.POLLOUT)
            now = time.monotonic()
            nearest = min((i.deadline for i in items.values()), default=None)
            wait = None if nearest is None else max(nearest - now, 0.0) * 1000
            try:
                ready = poller.poll(wait)
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                continue
            for fd, events in ready:
                if fd == wake:
                    try:
                        os.read(wake, 4096)
                    except BlockingIOError:
                        pass
                elif fd in items:
                    self._step(fd, items[fd], events)
            now = time.monotonic()
            for fd, item in items.items():
                if item.deadline <= now:
                    self._finish(fd, item)

    def _step(self, fd: int, item: _Item, events: int) -> None:
        if events & _DONE:
            self._finish(fd, item)  # the peer hung up: nobody is left to read it
            return
        try:
            n = item.sock.send(item.rest, _NOSIGNAL)
        except BlockingIOError:
            return
        except OSError:
            self._finish(fd, item)
            return
        item.rest = item.rest[n:]
        if not item.rest:
            self._finish(fd, item)

    def _finish(self, fd: int, item: _Item) -> None:
        with self.cond:
            if self.items.get(fd) is not item:
                return
            del self.items[fd]
            item.sock.close()
            self.cond.notify_all()

    def wait(self, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: not self.items, timeout)

    def after_fork(self) -> None:
        """In a forked child: the thread is gone; close the copies of the sockets."""
        for item in self.items.values():
            item.sock.close()
        self.items.clear()
        if self.wake is not None:
            for fd in self.wake:
                os.close(fd)
        self.wake = None
        self.cond = threading.Condition()


_lingerer = _Lingerer()
os.register_at_fork(after_in_child=_lingerer.after_fork)
atexit.register(lambda: _lingerer.wait(EXIT_WAIT))


def hand_over(sock: socket.socket, rest: bytes) -> None:
    """Write ``rest`` (the end of a goodbye frame) to ``sock`` when it has room, then close
    it; the caller gives ``sock`` up."""
    _lingerer.add(sock, rest)


def lingering() -> int:
    """How many sockets are waiting to write their goodbye (for tests and doctor)."""
    with _lingerer.cond:
        return len(_lingerer.items)

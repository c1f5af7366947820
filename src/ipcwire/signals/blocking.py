"""``signal:`` blocking driver.

* ``ipcwire.connect("signal:1234")`` sends signals to pid 1234 (``signal:group:1234``: to its
  process group): ``ch.send("USR1")``.
* ``ipcwire.listen("signal:USR1,HUP")`` waits for those signals in this process;
  ``accept()`` returns the channel they arrive on (one per listener).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ipcwire._core.url import Endpoint
from ipcwire._deadline import seconds_left
from ipcwire.channel import Channel, Listener
from ipcwire.errors import ChannelClosed, InvalidURL
from ipcwire.options import ChannelOptions, reject_unknown
from ipcwire.signals._names import parse_signal, parse_target
from ipcwire.signals._waiter import SignalSender, SignalWaiter

__all__ = ["SignalListener", "connect", "listen", "parse_target"]


def connect(endpoint: Endpoint, options: ChannelOptions, **kw: Any) -> SignalSender:
    """A channel that sends signals to a process; see the module.

    Raises:
        InvalidURL: not signal:PID or signal:group:PGID.
        ConfigurationError: unknown options.
    """
    kw.pop("timeout", None)
    reject_unknown(kw, endpoint, ("timeout",))
    pid, group = parse_target(endpoint)
    return SignalSender(pid, group=group)


def listen(endpoint: Endpoint, options: ChannelOptions, **kw: Any) -> SignalListener:
    """Wait for the listed signals in this process (call from the main thread).

    Raises:
        InvalidURL: no signal names.
        ConfigurationError: unknown signal names or options, or not the main thread.
    """
    reject_unknown(kw, endpoint, ())
    names = [n for n in endpoint.path.split(",") if n.strip()]
    if not names:
        raise InvalidURL(f"{endpoint}: name the signals to wait for, such as signal:USR1,HUP")
    return SignalListener(endpoint.url, SignalWaiter(parse_signal(n, endpoint.url) for n in names))


class SignalListener(Listener):
    """Hands out the one channel on which the signals arrive."""

    def __init__(self, url: str, waiter: SignalWaiter) -> None:
        self.url = url
        self._waiter = waiter
        self._given = False
        self._closed = False
        self._cond = threading.Condition()

    def accept(self, *, timeout: float | None = None) -> Channel:
        """The signal channel, the first time; later calls wait until the listener closes.

        Raises:
            ChannelClosed: the listener was closed.
            Timeout: (later calls) the listener stayed open for ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise ChannelClosed(f"listener {self.url} is closed", endpoint=self.url)
                if not self._given:
                    self._given = True
                    return self._waiter
                self._cond.wait(
                    seconds_left(
                        deadline, f"{self.url} has one channel, already accepted", self.url
                    )
                )

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._waiter.close()

"""What a blocking graceful shutdown waits for before it makes the main thread exit.

``serve()`` returns only after it has closed its channels and waited for its handlers
(boundedly). A graceful shutdown closes the listener and then raises ``SystemExit`` in the
main thread: raised while ``serve()`` was still closing its channels, it ended the process
with its handler threads and the channels not closed yet, and a WebSocket client saw the
connection lost without a closing handshake (1006, "the peer died") instead of the end.
A listener with :class:`ServeTracking` says when every ``serve()`` of it has returned
(``_wait_served``), and the shutdown waits for that first (see ``_shutdown.py``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

__all__ = ["ServeTracking", "wait_served"]


class ServeTracking:
    """A mixin for a blocking :class:`ipcwire.Listener`: counts its running ``serve()``."""

    def serve(self, handler: Any, *, max_channels: int | None = None) -> None:
        cond = self.__dict__.setdefault("_serve_cond", threading.Condition())
        with cond:
            self.__dict__["_serving"] = self.__dict__.get("_serving", 0) + 1
        try:
            super().serve(handler, max_channels=max_channels)  # type: ignore[misc]
        finally:
            with cond:
                self.__dict__["_serving"] -= 1
                cond.notify_all()

    def _wait_served(self, timeout: float) -> bool:
        """Wait up to ``timeout`` until no ``serve()`` of this listener runs; whether so."""
        cond: threading.Condition | None = self.__dict__.get("_serve_cond")
        if cond is None:
            return True
        with cond:
            return cond.wait_for(lambda: not self.__dict__.get("_serving"), timeout)


def wait_served(resources: list[Any], timeout: float) -> None:
    """Wait, up to ``timeout`` in all, until the listeners among ``resources`` that track
    their ``serve()`` are not serving any more."""
    deadline = time.monotonic() + timeout
    for res in resources:
        wait = getattr(res, "_wait_served", None)
        if callable(wait) and not isinstance(res, type):
            wait(max(deadline - time.monotonic(), 0.0))

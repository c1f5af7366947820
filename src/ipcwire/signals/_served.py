"""What a blocking graceful shutdown waits for before it makes the main thread exit.

``serve()`` returns only after it has closed its channels and waited for its handlers
(boundedly). A graceful shutdown closes the listener and then raises ``SystemExit`` in the
main thread: raised while ``serve()`` was still closing its channels, it ended the process
with its handler threads and the channels not closed yet, and a WebSocket client saw the
connection lost without a closing handshake (1006, "the peer died") instead of the end.
Every blocking :class:`ipcwire.Listener` says when each ``serve()`` of it has returned
(``Listener._wait_served``), and the shutdown waits for that first (see ``_shutdown.py``).
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["wait_served"]


def wait_served(resources: list[Any], timeout: float) -> None:
    """Wait, up to ``timeout`` in all, until the listeners among ``resources`` that track
    their ``serve()`` are not serving any more."""
    deadline = time.monotonic() + timeout
    for res in resources:
        wait = getattr(res, "_wait_served", None)
        if callable(wait) and not isinstance(res, type):
            wait(max(deadline - time.monotonic(), 0.0))

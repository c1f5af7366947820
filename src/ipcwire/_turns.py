"""Receives from several threads on one blocking channel take turns, each keeping its own
timeout (every blocking driver's receive lock goes through :func:`take_turn`)."""

from __future__ import annotations

import time
from typing import Protocol

from ipcwire._deadline import limit
from ipcwire.errors import Timeout

__all__ = ["take_turn"]


class _Lock(Protocol):
    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...


def take_turn(
    lock: _Lock,
    timeout: float | None,
    url: str,
    *,
    said: float | None = None,
    where: str = "from",
) -> float | None:
    """Take ``lock``, a channel's receive lock, within ``timeout``; what is left of it.

    Free (the common case), it is taken without a wait and the timeout is unchanged. Held by
    another thread's receive, it is waited for only within the timeout: before, a receive
    waited for the other thread's whole receive, whatever its own timeout (a
    ``recv(timeout=0.5)`` behind a ``recv()`` without one, until that one got a message: for
    ever, if none came). ``said``: the caller's own timeout, for the message, when
    ``timeout`` is already less (default: ``timeout``); ``where``: "from" a peer, "in" a
    spool.

    Raises:
        Timeout: the turn did not come in time ("... another thread was receiving on this
            channel meanwhile (receives take turns)").
        ConfigurationError: ``timeout`` is NaN or not a number.
    """
    if lock.acquire(False):
        return timeout
    wait = limit(timeout, url)
    if wait is None:
        lock.acquire()
        return None
    start = time.monotonic()
    if wait > 0 and lock.acquire(True, wait):
        return max(wait - (time.monotonic() - start), 0.0)
    said = timeout if said is None else said
    raise Timeout(
        f"no message {where} {url} "
        + ("yet" if said == 0 else f"within {said} s")
        + ": another thread was receiving on this channel meanwhile (receives take turns)",
        endpoint=url,
    )

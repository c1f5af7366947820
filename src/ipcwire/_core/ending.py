"""What the end of a byte stream means, without I/O (docs/protocol.md section 5).

Both drivers of a stream channel ask :func:`end_error` when the stream ends (or a goodbye
arrives): a clean close is :class:`~ipcwire.errors.EndOfChannel`; a stream cut in the middle
of a message, a goodbye carrying an error, and, on a channel whose handshake agreed on
goodbyes, an end with no goodbye (the peer was killed, crashed, or exited without closing)
are :class:`~ipcwire.errors.ChannelBroken`.
"""

from __future__ import annotations

import sys

from ipcwire._core.framing import LengthPrefixDecoder, NdjsonDecoder
from ipcwire.errors import ChannelBroken, ChannelClosed, EndOfChannel, IpcwireError

__all__ = ["end_error", "error_reason", "exit_reason", "failed_error"]


def end_error(dec: LengthPrefixDecoder | NdjsonDecoder, url: str) -> IpcwireError:
    """The error the end of ``url``'s stream stands for, given what its decoder saw."""
    if dec.buffered:
        return ChannelBroken(
            f"{url} closed in the middle of a message ({dec.partial_description()} "
            f"arrived); the partial message was discarded",
            endpoint=url,
        )
    if not dec.goodbye or dec.ended == "":
        return EndOfChannel(f"{url} closed its end", endpoint=url)
    if dec.ended is None:
        return ChannelBroken(
            f"{url} went away without closing the channel: its process was killed or died "
            f"(a fatal signal, os._exit), or dropped the channel without closing it, or closed "
            f"it while this side had left its last messages unread for over a minute; every "
            f"whole message it sent was delivered",
            endpoint=url,
        )
    return failed_error(url, dec.ended, url)


def failed_error(
    who: str,
    reason: str,
    endpoint: str,
    *,
    then: str = "every message it sent before that was delivered",
) -> ChannelBroken:
    """The end of a channel whose peer said it failed, the same words on every mechanism:
    ``who`` is the peer (its URL, or "the client of URL" on a listener's channel),
    ``reason`` what it said (already bounded and made readable), ``then`` what became of
    the messages it sent."""
    return ChannelBroken(
        f"{who} ended the channel after an error on its side ({reason}); {then}",
        endpoint=endpoint,
    )


def error_reason(exc: BaseException | None) -> str:
    """The reason a goodbye carries when ``exc`` ends a ``with`` block (or a ``serve()``
    handler) around the channel: ``""`` (a clean close) for none, or for ``EndOfChannel``
    (the peer ended first), or for ``ChannelClosed`` (this side closed it: a ``serve()``
    handler whose ``recv()`` was woken by the listener's shutdown closing its channel from
    another thread, which sends the clean goodbye; the handler's failure goodbye raced it,
    and its client was told the server failed). Only the exception's type crosses the wire:
    its text may hold what the peer should not see. ``SystemExit`` with code 0 or None
    (``sys.exit()``, a graceful shutdown) is a program finishing as it meant to: clean."""
    if exc is None or isinstance(exc, (EndOfChannel, ChannelClosed)):
        return ""
    if isinstance(exc, SystemExit) and exc.code in (None, 0):
        return ""
    return f"{type(exc).__name__} raised while the channel was open"


def exit_reason() -> str:
    """The reason for the channels a program leaves open as it exits: ``""`` when it ends
    normally, the type of the uncaught exception that ended it (Python sets
    ``sys.last_value`` before the exit handlers run). Not in an interactive session, whose
    ``last_value`` is the last error at the prompt, not how the session ended."""
    exc = getattr(sys, "last_value", None)
    if exc is None or hasattr(sys, "ps1"):
        return ""
    return f"{type(exc).__name__} uncaught: the program failed"

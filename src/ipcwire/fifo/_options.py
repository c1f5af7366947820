"""What both ``fifo:`` drivers check of ``connect()``'s and ``listen()``'s options."""

from __future__ import annotations

import os
from typing import Final

from ipcwire.errors import ConfigurationError
from ipcwire.fifo._path import FifoPaths
from ipcwire.options import ChannelOptions

__all__ = ["DEFAULT_TIMEOUT", "WRITERS", "check_token", "private"]

DEFAULT_TIMEOUT: Final = 10.0  # connect(): seconds to wait for a reader
WRITERS: Final = ("many", "one")  # connect(writers=...)


def check_token(options: ChannelOptions, paths: FifoPaths, mode: int | None = None) -> None:
    """A token needs the handshake, and so a way back (``reply=``); pickle needs FIFOs only
    their owner may open (``mode``: the listener's, None for a client).

    Raises:
        ConfigurationError: a token without ``reply=``; pickle with a ``mode`` that lets
            other users open the FIFOs.
    """
    if mode is not None and mode & 0o077 and options.codec.name == "pickle":
        raise _shared_pickle(options.url, f"mode={mode:#o} would let", "listen with mode=0o600")
    if options.token is not None and paths.reply is None:
        raise ConfigurationError(
            f"{options.url}: token= needs a handshake, which needs a way back: add "
            f"?reply=/path/to/reply.fifo, or rely on the FIFO's file mode (0600: only you)"
        )


def private(fd: int, path: str, options: ChannelOptions) -> int:
    """``fd``, an opened FIFO, checked for pickle: it is this user's and only its owner may
    open it (else it is closed and refused). A FIFO does not tell one writer from another,
    and the token authenticates only the handshake: whoever else may write the FIFO could
    put a pickle into the session after it.

    Raises:
        ConfigurationError: pickle, and the FIFO at ``path`` is another user's or open to
            other users.
    """
    if options.codec.name != "pickle":
        return fd
    uid = os.geteuid()
    try:
        st = os.fstat(fd)
        owner, have = st.st_uid, st.st_mode & 0o777
    except OSError:
        owner, have = -1, 0o777
    if owner != uid or have & 0o077:
        os.close(fd)
        whose = "" if owner == uid else f" and owned by uid {owner} (you are uid {uid})"
        raise _shared_pickle(
            options.url,
            f"the FIFO {path} is mode {have:#o}{whose}, which lets",
            "have the listener create its FIFOs with mode=0o600 (the default)",
        )
    return fd


def _shared_pickle(url: str, what: str, fix: str) -> ConfigurationError:
    return ConfigurationError(
        f"codec='pickle' refused for {url}: {what} other users open the FIFOs, and a FIFO "
        f"does not tell one writer from another. The token authenticates only the "
        f"handshake, not the messages after it: a pickle another writer put into the "
        f"session would run here. Use codec='msgpack' or 'json' (safe with any mode), or, "
        f"when only you write both ends, {fix}",
        endpoint=url,
    )

"""What both ``fifo:`` drivers check of ``connect()``'s and ``listen()``'s options."""

from __future__ import annotations

from typing import Final

from ipcwire.errors import ConfigurationError
from ipcwire.fifo._path import FifoPaths
from ipcwire.options import ChannelOptions

__all__ = ["DEFAULT_TIMEOUT", "WRITERS", "check_token"]

DEFAULT_TIMEOUT: Final = 10.0  # connect(): seconds to wait for a reader
WRITERS: Final = ("many", "one")  # connect(writers=...)


def check_token(options: ChannelOptions, paths: FifoPaths) -> None:
    """A token needs the handshake, and so a way back (``reply=``).

    Raises:
        ConfigurationError: a token without ``reply=``.
    """
    if options.token is not None and paths.reply is None:
        raise ConfigurationError(
            f"{options.url}: token= needs a handshake, which needs a way back: add "
            f"?reply=/path/to/reply.fifo, or rely on the FIFO's file mode (0600: only you)"
        )

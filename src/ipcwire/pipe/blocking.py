"""``pipe:`` blocking driver: open a channel on pipe fds this process inherited.

``ipcwire.connect("pipe:?rfd=5&wfd=8")`` takes over fds 5 (read) and 8 (write); one of them
may be left out for a one-way end. The URL comes from :attr:`ipcwire.pipe.PipeEnd.url` in
the process that made the pipe. There is nothing to listen on: pipes have no name.
"""

from __future__ import annotations

from typing import Any

from ipcwire._core.url import Endpoint
from ipcwire.channel import Listener
from ipcwire.errors import ConfigurationError
from ipcwire.options import ChannelOptions, reject_unknown
from ipcwire.pipe._address import parse_fds
from ipcwire.pipe._channel import PipeChannel
from ipcwire.pipe._ends import open_channel
from ipcwire.pipe._fdutil import set_cloexec

__all__ = ["connect", "listen", "parse_fds"]


def connect(endpoint: Endpoint, options: ChannelOptions, **kw: Any) -> PipeChannel:
    """Open a channel on inherited pipe fds; see :func:`ipcwire.connect`.

    Raises:
        InvalidURL: the URL names no open pipe fds.
        ConfigurationError: unknown options, or a token on a one-way end.
        AuthenticationFailed, HandshakeError, Timeout: with a token.
    """
    kw.pop("timeout", None)  # nothing to wait for: the pipe exists
    reject_unknown(kw, endpoint, ("timeout",))
    rfd, wfd, role = parse_fds(endpoint)
    for fd in (rfd, wfd):
        if fd is not None:
            set_cloexec(fd)
    return open_channel(rfd, wfd, options, role=role, handshake=True)


def listen(endpoint: Endpoint, options: ChannelOptions, **kw: Any) -> Listener:
    """Pipes have no name to listen on.

    Raises:
        ConfigurationError: always, with what to use instead.
    """
    raise ConfigurationError(
        f"{endpoint}: an anonymous pipe has no name to listen on; make the pipe with "
        f"ipcwire.pipe.ends() and pass one end to the child, or use fifo:///path for a named "
        f"pipe that unrelated processes can open"
    )

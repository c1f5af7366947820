"""``pipe:`` asyncio driver, and the asyncio channel over pipe fds that spawn/fifo reuse."""

from __future__ import annotations

import asyncio
from typing import Any

from ipcwire._core.url import Endpoint
from ipcwire.aio.channel import AioListener
from ipcwire.channel import PeerInfo
from ipcwire.errors import ConfigurationError
from ipcwire.options import ChannelOptions, reject_unknown
from ipcwire.pipe._address import parse_fds
from ipcwire.pipe._aio_channel import AioPipeChannel
from ipcwire.pipe._aio_fd import FdTransport
from ipcwire.pipe._channel import DEFAULT_MAX_READAHEAD
from ipcwire.pipe._fdutil import close_fds, set_cloexec
from ipcwire.pipe._stream_protocol import make_protocol

__all__ = ["AioPipeChannel", "connect", "listen", "open_aio_channel"]


async def open_aio_channel(
    rfd: int | None,
    wfd: int | None,
    options: ChannelOptions,
    *,
    role: str,
    handshake: bool,
    watch: int | None = None,
    peer: PeerInfo | None = None,
    nonblocking: bool = True,
    restore: dict[int, int] | None = None,
    max_readahead: int = DEFAULT_MAX_READAHEAD,
    read_to_eagain: bool = False,
    channel_factory: Any = AioPipeChannel,
    **channel_kw: Any,
) -> AioPipeChannel:
    """An asyncio channel on these fds (taken over), after the token handshake if any.

    Raises:
        ConfigurationError: a token on a one-way end (its fd is closed).
        AuthenticationFailed, HandshakeError, Timeout, ChannelBroken: the handshake failed.
    """
    use_hs = handshake and options.token is not None
    if use_hs and (rfd is None or wfd is None):
        close_fds(rfd, wfd)  # taken over: nobody else will close them (as open_channel)
        raise ConfigurationError(
            f"{options.url}: token= needs a handshake, and a one-way pipe cannot carry one"
        )
    loop = asyncio.get_running_loop()
    ch: AioPipeChannel = channel_factory(
        options.url,
        options.wire(),
        readable=rfd is not None,
        writable=wfd is not None,
        peer=peer,
        max_readahead=max_readahead,
        **channel_kw,
    )
    proto, done = make_protocol(ch, options, role=role if use_hs else None)
    transport = FdTransport(
        loop,
        rfd,
        wfd,
        proto,
        watch=watch,
        nonblocking=nonblocking,
        restore=restore,
        read_to_eagain=read_to_eagain,
    )
    ch.attach(transport)
    transport.start()
    try:
        await done
    except BaseException:
        transport.abort()
        raise
    return ch


async def connect(endpoint: Endpoint, options: ChannelOptions, **kw: Any) -> AioPipeChannel:
    """Open an asyncio channel on inherited pipe fds; see :func:`ipcwire.aio.connect`.

    Raises:
        InvalidURL, ConfigurationError, AuthenticationFailed, HandshakeError, Timeout.
    """
    kw.pop("timeout", None)
    reject_unknown(kw, endpoint, ("timeout",))
    rfd, wfd, role = parse_fds(endpoint)
    for fd in (rfd, wfd):
        if fd is not None:
            set_cloexec(fd)
    return await open_aio_channel(rfd, wfd, options, role=role, handshake=True)


async def listen(endpoint: Endpoint, options: ChannelOptions, **kw: Any) -> AioListener:
    """Pipes have no name to listen on.

    Raises:
        ConfigurationError: always, with what to use instead.
    """
    raise ConfigurationError(
        f"{endpoint}: an anonymous pipe has no name to listen on; make the pipe with "
        f"ipcwire.pipe.ends() and pass one end to the child, or use fifo:///path"
    )

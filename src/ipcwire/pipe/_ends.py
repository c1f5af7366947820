"""Pipe ends: fds that become channels where they are used.

::

    parent_end, child_end = ipcwire.pipe.ends()          # two pipes, one per direction
    proc = subprocess.Popen([sys.executable, "worker.py", child_end.url],
                            pass_fds=child_end.fds)
    child_end.close()                                    # the parent's copy: close it
    with parent_end.open(codec="json") as ch: ...        # worker: ipcwire.connect(argv[1])

Every fd is close-on-exec, so a pipe reaches only the processes it is given to (``pass_fds``,
``fork``, or pickling into ``multiprocessing``, which duplicates the fds into the child).
A process must close the ends it does not use, or the peer never sees end of stream: that is
what :meth:`PipeEnd.close` is for after a fork or spawn.
"""

from __future__ import annotations

import contextlib
import os
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from ipcwire._core.url import Endpoint
from ipcwire.errors import ChannelClosed, ConfigurationError
from ipcwire.options import ChannelOptions
from ipcwire.pipe._channel import PipeChannel
from ipcwire.pipe._fd import FdStream
from ipcwire.pipe._fdutil import make_pipe
from ipcwire.pipe._handshake import fd_handshake

if TYPE_CHECKING:
    from ipcwire.pipe.aio import AioPipeChannel

__all__ = ["PipeEnd", "ends", "pair", "url_for"]


def url_for(rfd: int | None, wfd: int | None, role: str, options: dict[str, Any]) -> str:
    """``pipe:?rfd=5&wfd=8&role=server&codec=json`` (only what differs from the defaults)."""
    parts = []
    if rfd is not None:
        parts.append(f"rfd={rfd}")
    if wfd is not None:
        parts.append(f"wfd={wfd}")
    if role != "client":
        parts.append(f"role={role}")
    for key in ("codec", "framing", "max_frame"):
        value = options.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool):
            parts.append(f"{key}={value}")
    return "pipe:?" + "&".join(parts)


class PipeEnd:
    """One end of a pipe pair: a read fd and/or a write fd, not yet a channel.

    ``role`` decides who speaks first in the token handshake (``client`` for the first end
    :func:`ends` returns, ``server`` for the second); without a token it does not matter.
    """

    def __init__(self, rfd: int | None, wfd: int | None, *, role: str = "client") -> None:
        if rfd is None and wfd is None:
            raise ConfigurationError("a pipe end needs a read fd, a write fd, or both")
        if role not in ("client", "server"):
            raise ConfigurationError(f"role must be 'client' or 'server', not {role!r}")
        self.rfd = rfd
        self.wfd = wfd
        self.role = role
        self._taken = False

    @property
    def fds(self) -> tuple[int, ...]:
        """The fds, for ``subprocess.Popen(pass_fds=...)``."""
        return tuple(fd for fd in (self.rfd, self.wfd) if fd is not None)

    @property
    def url(self) -> str:
        """The URL a process that inherited :attr:`fds` passes to ``ipcwire.connect``."""
        return url_for(self.rfd, self.wfd, self.role, {})

    def url_with(self, **options: Any) -> str:
        """:attr:`url` carrying options too (``codec=``, ``framing=``, ``max_frame=``)."""
        return url_for(self.rfd, self.wfd, self.role, options)

    def _take(self) -> tuple[int | None, int | None]:
        if self._taken:
            raise ChannelClosed(
                f"{self.url}: this end was already opened or closed; an end opens once",
                endpoint=self.url,
            )
        self._taken = True
        return self.rfd, self.wfd

    def open(self, **options: Any) -> PipeChannel:
        """This end as a blocking channel (it takes over the fds).

        Options: ``codec``, ``framing``, ``max_frame``, ``token`` (both ends, then they
        handshake), ``handshake_timeout``.

        Raises:
            ChannelClosed: already opened or closed.
            ConfigurationError: bad options.
            AuthenticationFailed, HandshakeError, Timeout: with a token.
        """
        opts = ChannelOptions.build(Endpoint(url=self.url, scheme="pipe"), dict(options))
        rfd, wfd = self._take()
        return open_channel(rfd, wfd, opts, role=self.role, handshake=True)

    async def aopen(self, **options: Any) -> AioPipeChannel:
        """This end as an asyncio channel (it takes over the fds); as :meth:`open`.

        Raises:
            ChannelClosed, ConfigurationError, AuthenticationFailed, HandshakeError, Timeout.
        """
        from ipcwire.pipe.aio import open_aio_channel

        opts = ChannelOptions.build(Endpoint(url=self.url, scheme="pipe"), dict(options))
        rfd, wfd = self._take()
        return await open_aio_channel(rfd, wfd, opts, role=self.role, handshake=True)

    def close(self) -> None:
        """Close the fds here (after handing them to a child); idempotent."""
        if self._taken:
            return
        self._taken = True
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        # For multiprocessing: the fds are duplicated into the receiving process.
        from multiprocessing.reduction import DupFd

        if self._taken:
            raise ChannelClosed(f"{self.url}: cannot send a closed pipe end", endpoint=self.url)
        r = DupFd(self.rfd) if self.rfd is not None else None
        w = DupFd(self.wfd) if self.wfd is not None else None
        return _rebuild, (r, w, self.role)

    def __repr__(self) -> str:
        state = "used" if self._taken else "ready"
        return f"<PipeEnd {self.url} {state}>"


def _rebuild(r: Any, w: Any, role: str) -> PipeEnd:
    return PipeEnd(
        r.detach() if r is not None else None, w.detach() if w is not None else None, role=role
    )


def ends(*, duplex: bool = True) -> tuple[PipeEnd, PipeEnd]:
    """Two connected ends. ``duplex``: two pipes, each end sends and receives; otherwise one
    pipe, the first end sends and the second receives."""
    a_r, b_w = make_pipe()
    if not duplex:
        return PipeEnd(None, b_w, role="client"), PipeEnd(a_r, None, role="server")
    b_r, a_w = make_pipe()
    return PipeEnd(b_r, b_w, role="client"), PipeEnd(a_r, a_w, role="server")


def pair(*, duplex: bool = True, **options: Any) -> tuple[PipeChannel, PipeChannel]:
    """Two connected channels in this process (for threads, or to keep across ``fork``).

    Both ends are made here, so a ``token`` needs no handshake: nobody else can hold them.

    Raises:
        ConfigurationError: bad options.
    """
    first, second = ends(duplex=duplex)
    opts = ChannelOptions.build(Endpoint(url="pipe:", scheme="pipe"), dict(options))
    fa = first._take()
    fb = second._take()
    a = open_channel(*fa, _named(opts, "client"), role="client", handshake=False)
    b = open_channel(*fb, _named(opts, "server"), role="server", handshake=False)
    return a, b


def _named(opts: ChannelOptions, role: str) -> ChannelOptions:
    from dataclasses import replace

    return replace(opts, url=f"pipe:({role} end of a pair)")


def open_channel(
    rfd: int | None,
    wfd: int | None,
    options: ChannelOptions,
    *,
    role: str,
    handshake: bool,
) -> PipeChannel:
    """A blocking channel on these fds (taken over), after the token handshake if any.

    Raises:
        ConfigurationError: a token on a one-way end (a handshake needs both directions).
        AuthenticationFailed, HandshakeError, Timeout, ChannelBroken: the handshake failed.
    """
    if handshake and options.token is not None and (rfd is None or wfd is None):
        for fd in (rfd, wfd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        raise ConfigurationError(
            f"{options.url}: token= needs a handshake, and a one-way pipe cannot carry one; "
            f"use ends(duplex=True), or rely on the fact that only processes you gave the "
            f"fds to can use the pipe"
        )
    stream = FdStream(rfd, wfd, endpoint=options.url)
    if not handshake or options.token is None:
        wire = options.wire()
        return PipeChannel(stream, wire, options.url, decoder=wire.decoder())
    try:
        wire, decoder = fd_handshake(stream, options, client=role == "client")
    except BaseException:
        stream.close()
        raise
    return PipeChannel(stream, wire, options.url, decoder=decoder)

"""The server core configured from a listener's options (shared by both listeners)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ipcwire.errors import ConfigurationError
from ipcwire.http._address import HttpAddress, peer_of, uid_check
from ipcwire.http._server import HttpServer
from ipcwire.http._session import Session
from ipcwire.options import ChannelOptions

__all__ = ["make_server"]


def make_server(
    addr: HttpAddress,
    url: str,
    options: ChannelOptions,
    new_channel: Callable[[Session], Any],
    enqueue: Callable[[Any], None],
    *,
    reply_timeout: float,
    session_timeout: float,
    max_channels: int,
    allow_uids: Iterable[int] | None,
) -> HttpServer:
    """The server core, configured (shared by both listeners).

    Raises:
        ConfigurationError: ``allow_uids`` on a TCP endpoint.
    """
    if addr.unix is None and allow_uids is not None:
        raise ConfigurationError(
            f"allow_uids= needs http+unix:// ({url} is TCP, which has no peer credentials)"
        )
    return HttpServer(
        url=url,
        prefix=addr.prefix,
        options=options,
        new_channel=new_channel,
        on_channel=enqueue,
        reply_timeout=reply_timeout,
        session_timeout=session_timeout,
        max_channels=max_channels,
        peer=peer_of(addr),
        authorize=uid_check(url, allow_uids),
    )

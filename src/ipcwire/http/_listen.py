"""What both drivers' ``listen()`` share: its options, binding, the server core configured."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from ipcwire._core.url import Endpoint
from ipcwire._exposure import warn_if_exposed
from ipcwire.errors import ConfigurationError
from ipcwire.http._address import HttpAddress, bind, peer_of, resolve, uid_check
from ipcwire.http._server import HttpServer
from ipcwire.http._session import Session
from ipcwire.http._sessions_cap import max_sessions_option
from ipcwire.options import ChannelOptions, reject_unknown, unix_only
from ipcwire.ws._web import OriginPolicy

if TYPE_CHECKING:
    import socket

__all__ = [
    "DEFAULT_SESSION_TIMEOUT",
    "LISTEN_KW",
    "bind_endpoint",
    "make_server",
    "warn_if_plaintext",
]

DEFAULT_SESSION_TIMEOUT: Final = 300.0
LISTEN_KW: Final = (
    "ssl",
    "backlog",
    "mode",
    "allow_uids",
    "reply_timeout",
    "session_timeout",
    "max_channels",
    "max_sessions",
)


def bind_endpoint(
    endpoint: Endpoint,
    kw: dict[str, Any],
    *,
    backlog: int,
    mode: int | None,
    allow_uids: object,
    max_sessions: object,
    tls: bool,
) -> tuple[socket.socket, HttpAddress, Callable[[], None]]:
    """Check ``listen``'s options and bind: the listening socket, the address it really has
    (port 0 resolved), its cleanup. ``tls``: whether ``ssl=`` was given; ``mode``: the socket
    file's (``None``: 0600).

    Raises:
        ConfigurationError: an unknown option, ``max_sessions`` not a whole number of at
            least 1 or None, ``https://`` without ``ssl=`` or ``ssl=`` with ``http://``,
            ``mode=`` or ``allow_uids=`` on TCP (or as :func:`~ipcwire.http._address.bind`).
        AddressInUse, PermissionDenied, InvalidURL: with the fix.
    """
    reject_unknown(kw, endpoint, LISTEN_KW)
    max_sessions_option(endpoint.url, max_sessions)
    addr = resolve(endpoint, listening=True)
    url = endpoint.url
    if addr.unix is None:  # (refused before binding)
        unix_only(url, "http+unix", mode=mode, allow_uids=allow_uids)
    # (as ws and sse: an https:// listener served plain HTTP under its https:// URL, and an
    # http:// one with ssl= served TLS under an http:// URL its clients could not use)
    if addr.tls and not tls:
        raise ConfigurationError(
            f"listening at {url} needs ssl=SSLContext with a certificate "
            f"(ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH); "
            f"ctx.load_cert_chain(cert, key)), or use http://",
            endpoint=url,
        )
    if tls and not addr.tls:
        raise ConfigurationError(
            f"ssl= is for https:// URLs; listen at https://... instead of {url}", endpoint=url
        )
    return bind(addr, url, backlog=backlog, mode=0o600 if mode is None else mode)


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
    max_sessions: int | None,
    allow_uids: Iterable[int] | None,
    origins: OriginPolicy,
) -> HttpServer:
    """The server core, configured (shared by both listeners).

    Raises:
        ConfigurationError: ``allow_uids`` on a TCP endpoint.
    """
    if addr.unix is None:  # (bind_endpoint refused it already)
        unix_only(url, "http+unix", mode=None, allow_uids=allow_uids)
    return HttpServer(
        url=url,
        prefix=addr.prefix,
        options=options,
        new_channel=new_channel,
        on_channel=enqueue,
        reply_timeout=reply_timeout,
        session_timeout=session_timeout,
        max_channels=max_channels,
        max_sessions=max_sessions,
        peer=peer_of(addr),
        authorize=uid_check(url, allow_uids),
        origins=origins,
    )


def warn_if_plaintext(addr: HttpAddress, url: str, token: bytes | None, tls: bool) -> None:
    """Log one warning when the listener at ``url`` takes requests from other machines
    without TLS (its token, if it has one, is in every request's header)."""
    if addr.unix is None:
        warn_if_exposed(
            url,
            addr.host,
            token=token,
            tls=tls,
            tls_fix="ssl= (an SSLContext) with https://",
            sent_in="in every request's Authorization header",
        )

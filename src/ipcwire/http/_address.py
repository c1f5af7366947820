"""Where an HTTP endpoint is: ``http://host:port/prefix``, ``https://...``,
``http+unix:///path.sock?prefix=/api``; binding the listening socket; who a client is."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from urllib.parse import quote

from aiohttp import web

from ipcwire._core.url import Endpoint
from ipcwire.channel import PeerInfo
from ipcwire.errors import InvalidURL, IpcwireError
from ipcwire.tcp._socket import TcpAddress
from ipcwire.tcp._socket import bind_listener as bind_tcp
from ipcwire.tcp._socket import resolve as check_host  # (its host name check)
from ipcwire.unix._socket import UidRefused, UnixAddress, peer_info
from ipcwire.unix._socket import bind_listener as bind_unix
from ipcwire.unix._socket import resolve as resolve_unix

__all__ = ["HttpAddress", "resolve"]


@dataclass(frozen=True, slots=True)
class HttpAddress:
    """A parsed HTTP endpoint."""

    scheme: str  # http, https or http+unix
    host: str
    port: int
    unix: UnixAddress | None
    prefix: str  # "" or "/a/b" (no trailing slash)

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    def base_url(self) -> str:
        """What the HTTP client puts in front of the endpoint paths."""
        if self.unix is not None:
            return f"http://localhost{self.prefix}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}{self.prefix}"

    def url(self) -> str:
        """The endpoint's canonical ipcwire URL."""
        if self.unix is not None:
            query = f"?prefix={quote(self.prefix)}" if self.prefix else ""
            where = f"@{self.unix.abstract}" if self.unix.abstract is not None else self.unix.path
            slashes = "" if self.unix.abstract is not None else "//"
            return f"http+unix:{slashes}{where}{query}"
        return self.base_url()


def _prefix(raw: str) -> str:
    p = "/" + raw.strip("/") if raw.strip("/") else ""
    if any(c in p for c in "?#") or "//" in p:
        raise InvalidURL(f"the path prefix {raw!r} is not a clean path")
    return p


def resolve(endpoint: Endpoint, *, listening: bool) -> HttpAddress:
    """Parse an HTTP endpoint URL.

    Raises:
        InvalidURL: no port to listen on, no host to connect to, or a bad socket path.
    """
    scheme = endpoint.scheme
    if scheme == "http+unix":
        addr = resolve_unix(endpoint)
        return HttpAddress(scheme, "", 0, addr, _prefix(endpoint.params.get("prefix", "")))
    port = endpoint.port
    if port is None:
        if listening:
            raise InvalidURL(
                f"{endpoint.url} has no port to listen on: write {scheme}://127.0.0.1:8080/ "
                f"(or port 0 for any free port)",
                endpoint=endpoint.url,
            )
        port = 443 if scheme == "https" else 80
    host = endpoint.host
    if not host:
        if not listening:
            raise InvalidURL(f"{endpoint.url} has no host to connect to", endpoint=endpoint.url)
        host = "127.0.0.1"
    check_host(replace(endpoint, host=host, port=port), listening=True)  # (idna's UnicodeError)
    return HttpAddress(scheme, host, port, None, _prefix(endpoint.path))


def bind(
    addr: HttpAddress, url: str, *, backlog: int, mode: int
) -> tuple[socket.socket, HttpAddress, Callable[[], None]]:
    """A listening socket; the address it really has (port 0 resolved); its cleanup.

    Raises:
        AddressInUse, PermissionDenied, InvalidURL, ConfigurationError: with the fix.
    """
    if addr.unix is not None:
        sock, cleanup = bind_unix(addr.unix, url, mode=mode, backlog=backlog)
        return sock, addr, cleanup
    sock = bind_tcp(TcpAddress(addr.host, addr.port), url, backlog)
    # Accepted sockets take their ``proto`` from the listening socket object; asyncio sets
    # TCP_NODELAY only on sockets whose proto says TCP (a bare SOCK_STREAM says 0), and
    # without it aiohttp's separate header and body writes meet Nagle's 40 ms stalls.
    sock = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
    host, port = sock.getsockname()[:2]
    return sock, HttpAddress(addr.scheme, host, port, None, addr.prefix), lambda: None


def peer_of(addr: HttpAddress) -> Callable[[web.BaseRequest], PeerInfo]:
    """How the server learns who sent a request (SO_PEERCRED on Unix sockets)."""
    if addr.unix is not None:
        where = str(addr.unix)

        def unix_peer(request: web.BaseRequest) -> PeerInfo:
            transport = request.transport
            sock = transport.get_extra_info("socket") if transport is not None else None
            if sock is None:
                return PeerInfo(address=where)
            try:
                return peer_info(sock, where)
            except OSError:
                return PeerInfo(address=where)

        return unix_peer

    def tcp_peer(request: web.BaseRequest) -> PeerInfo:
        transport = request.transport
        name = transport.get_extra_info("peername") if transport is not None else None
        if isinstance(name, tuple) and len(name) >= 2:
            return PeerInfo(address=f"{name[0]}:{name[1]}")
        return PeerInfo(address=request.remote)

    return tcp_peer


def uid_check(
    url: str, allow_uids: Iterable[int] | None
) -> Callable[[PeerInfo], IpcwireError | None] | None:
    """The allow-list check for ``http+unix`` listeners (None when there is none)."""
    if allow_uids is None:
        return None
    allowed = frozenset(allow_uids)

    def check(peer: PeerInfo) -> IpcwireError | None:
        if peer.uid in allowed:
            return None
        # the peer learns it is not allowed, not who is (the list is the server log's)
        return UidRefused(
            f"uid {peer.uid} (pid {peer.pid}) may not use {url}: the server does not allow "
            f"uid {peer.uid}; ask its owner to add it to the server's allow_uids",
            endpoint=url,
            server_log=(
                f"uid {peer.uid} (pid {peer.pid}) is not in allow_uids {sorted(allowed)}; if "
                f"it should use {url}, add it there (allow_uids=[..., {peer.uid}])"
            ),
        )

    return check

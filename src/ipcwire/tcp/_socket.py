"""TCP plumbing shared by the blocking and asyncio drivers.

Listening binds 127.0.0.1 unless a host is given (``tcp://0.0.0.0:7000`` to accept from other
machines, which then wants ``token=`` and TLS: a listener on such an address with neither logs
a warning). SO_REUSEADDR is set so a restarted server does not hit EADDRINUSE from its
previous run's TIME_WAIT sockets; a real conflict becomes ``AddressInUse`` naming the process
that holds the port. Every connection gets TCP_NODELAY, and TCP keepalive (``keepalive=``,
below) so that a peer whose machine or network went away is noticed.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import math
import socket
from dataclasses import dataclass
from typing import Any, Final

from ipcwire._core.url import Endpoint
from ipcwire._procfs import describe_pid, pids_for_inodes, tcp_listener_inodes
from ipcwire._stream.listener import listening_here, wait_dropped_closed
from ipcwire.channel import PeerInfo
from ipcwire.errors import (
    AddressInUse,
    ChannelBroken,
    ConfigurationError,
    ConnectionRefused,
    InvalidURL,
    IpcwireError,
    PermissionDenied,
)
from ipcwire.unix._namespaces import net_namespace_hint

__all__ = [
    "DEFAULT_KEEPALIVE",
    "KEEPALIVE_INTERVAL",
    "KEEPALIVE_PROBES",
    "TcpAddress",
    "bind_listener",
    "configure",
    "explain_connect_error",
    "keepalive_option",
    "peer_info",
    "resolve",
]

DEFAULT_HOST = "127.0.0.1"

# TCP keepalive. A peer whose machine died, or whose network went away, sends nothing, not
# even a reset: without probes a receive waits for ever (the kernel's own keepalive, when a
# program turns it on, starts after 2 hours). After DEFAULT_KEEPALIVE seconds without a
# packet from the peer, the kernel sends a probe every KEEPALIVE_INTERVAL seconds (or every
# ``keepalive`` seconds when that is shorter); KEEPALIVE_PROBES unanswered ones end the
# connection with ETIMEDOUT: a dead peer is noticed within keepalive + 3 intervals (90 s by
# default). An idle connection costs one small packet each way per minute.
# Probes only go out while everything sent was acknowledged. A peer that vanished with data
# of ours unacknowledged is given up when the kernel stops resending it: about 15 minutes
# (net.ipv4.tcp_retries2). TCP_USER_TIMEOUT would bound that too, but on Linux it also ends a
# connection whose peer, alive, lets a send wait that long for room (it reads nothing while
# its receive window stays shut): a slow reader must slow the writer, not lose what it had
# buffered, so it is not set.
DEFAULT_KEEPALIVE: Final = 60
KEEPALIVE_INTERVAL: Final = 10
KEEPALIVE_PROBES: Final = 3
_MAX_KEEPIDLE: Final = 32767  # Linux's limit for TCP_KEEPIDLE (MAX_TCP_KEEPIDLE)

log = logging.getLogger("ipcwire")


@dataclass(frozen=True, slots=True)
class TcpAddress:
    host: str
    port: int

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def resolve(endpoint: Endpoint, *, listening: bool) -> TcpAddress:
    """Host and port from ``tcp://host:port`` (port 0 to listen on any free port).

    Raises:
        InvalidURL: no port, or no host to connect to.
    """
    if endpoint.port is None:
        raise InvalidURL(
            f"{endpoint.url} has no port: write tcp://127.0.0.1:7000", endpoint=endpoint.url
        )
    host = endpoint.host
    if not host:
        if not listening:
            raise InvalidURL(f"{endpoint.url} has no host to connect to", endpoint=endpoint.url)
        host = DEFAULT_HOST
    try:
        host.encode("idna")  # what getaddrinfo does with it (a UnicodeError there, raw)
    except UnicodeError as exc:
        raise InvalidURL(
            f"{endpoint.url}: {host!r} is not a valid host name ({exc.__cause__ or exc}): each "
            f"dot-separated part is 1 to 63 characters; check the spelling",
            endpoint=endpoint.url,
        ) from None
    return TcpAddress(host, endpoint.port)


def keepalive_option(endpoint: Endpoint, kw: dict[str, Any]) -> int | None:
    """Take ``keepalive=`` out of ``kw`` (the URL's ``?keepalive=`` is the default): seconds
    without traffic before the first probe, rounded up to whole seconds; None (``none`` in a
    URL) or 0 turns keepalive off.

    Raises:
        ConfigurationError: not a number of seconds, negative, NaN or infinite.
    """
    query = endpoint.params.get("keepalive")
    raw: object = kw.pop("keepalive", DEFAULT_KEEPALIVE if query is None else query)
    value: object = raw
    if isinstance(raw, str):
        text = raw.strip().lower()
        try:
            value = None if text in ("", "none") else float(text)
        except ValueError:
            value = raw
    if value is None or value == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ConfigurationError(
            f"keepalive={raw!r} for {endpoint.url}: give the seconds a connection may be idle "
            f"before TCP keepalive probes check that the peer is still there (a number over "
            f"0, default {DEFAULT_KEEPALIVE}), or None (or 0) to turn keepalive off",
            endpoint=endpoint.url,
        )
    return min(math.ceil(value), _MAX_KEEPIDLE)


def configure(sock: Any, keepalive: int | None) -> None:
    """Options every TCP channel gets: TCP_NODELAY (no Nagle delay on small messages), and
    unless ``keepalive`` is None, TCP keepalive: the first probe after ``keepalive`` seconds
    without traffic, then one every min(keepalive, KEEPALIVE_INTERVAL) seconds, and the
    connection ends (ETIMEDOUT: ChannelBroken) after KEEPALIVE_PROBES unanswered ones (not
    TCP_USER_TIMEOUT: see above). Where the system
    lacks an option (TCP_KEEPIDLE is TCP_KEEPALIVE on macOS), its default stays.
    ``sock`` is a socket, or asyncio's wrapper of one."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if keepalive is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)
    interval = min(keepalive, KEEPALIVE_INTERVAL)
    for name, value in (
        (idle, keepalive),
        (getattr(socket, "TCP_KEEPINTVL", None), interval),
        (getattr(socket, "TCP_KEEPCNT", None), KEEPALIVE_PROBES),
    ):
        if name is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, name, value)
            except OSError:  # (an older Windows has the name but not the option)
                pass


def peer_info(sock: socket.socket) -> PeerInfo:
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return PeerInfo()
    return PeerInfo(address=f"{host}:{port}")


def _holder(addr: TcpAddress) -> tuple[str, int | None]:
    pids = pids_for_inodes(tcp_listener_inodes(addr.port, addr.host))
    if pids:
        return ", ".join(describe_pid(p) for p in pids), pids[0]
    return "another process (ipcwire cannot see which)", None


def bind_listener(addr: TcpAddress, url: str, backlog: int) -> socket.socket:
    """A listening TCP socket.

    Raises:
        AddressInUse: the port is taken (naming the holder when it can be seen).
        PermissionDenied: a port below 1024 without the privilege.
    """
    wait_dropped_closed()  # (a listener this program dropped may still hold it)
    try:
        infos = socket.getaddrinfo(addr.host, addr.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InvalidURL(f"cannot resolve the host of {url}: {exc}", endpoint=url) from exc
    family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            raise _bind_error(exc, addr, url) from exc
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_error(exc: OSError, addr: TcpAddress, url: str) -> IpcwireError | OSError:
    if exc.errno == errno.EADDRINUSE:
        who, pid = _holder(addr)
        return listening_here(url, pid) or AddressInUse(
            f"cannot listen at {url}: port {addr.port} is in use by {who}. Stop it, choose "
            f"another port, or use port 0 for any free one (`ipcwire doctor {url}`)",
            pid=pid,
            endpoint=url,
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PermissionDenied(
            f"cannot listen at {url}: ports below 1024 need privileges; use a higher port",
            endpoint=url,
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return InvalidURL(
            f"cannot listen at {url}: {addr.host} is not an address of this machine",
            endpoint=url,
        )
    return exc


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# getaddrinfo's answers for a name that does not exist (EAI_NODATA: it exists, with no
# address; glibc only)
_NO_SUCH_NAME: Final = frozenset(
    code for code in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)) if code is not None
)


def explain_resolve_error(exc: socket.gaierror, addr: TcpAddress, url: str) -> IpcwireError:
    """A connect whose host name did not resolve: a name that does not exist is a mistake in
    the URL (``InvalidURL``, as ``listen()`` says it); a temporary failure of the resolver
    (EAI_AGAIN: DNS unreachable or answering SERVFAIL) a ``ChannelBroken`` that
    ``reconnect=`` retries (``ipcwire._stream.connect.retried``)."""
    if exc.errno in _NO_SUCH_NAME:
        return InvalidURL(
            f"cannot connect to {url}: the host {addr.host!r} does not exist ({exc.strerror}): "
            f"check its spelling, /etc/hosts, or the DNS this machine uses",
            endpoint=url,
        )
    if exc.errno == socket.EAI_AGAIN:
        return ChannelBroken(
            f"cannot connect to {url}: temporary failure in name resolution of "
            f"{addr.host!r} (the DNS server did not answer, or failed): check the network and "
            f"/etc/resolv.conf, or pass reconnect=SECONDS to keep trying",
            endpoint=url,
        )
    return ChannelBroken(
        f"cannot connect to {url}: cannot resolve the host {addr.host!r} ({exc.strerror})",
        endpoint=url,
    )


def explain_connect_error(exc: OSError, addr: TcpAddress, url: str) -> IpcwireError | None:
    """A host name that does not resolve (:func:`explain_resolve_error`); a connect to this
    machine's loopback refused (or unreachable) from inside a network namespace of its own (a
    container, a sandbox): 127.0.0.1 there is that namespace's own loopback, not the host's.
    None: the usual words (ipcwire._oserror.translate)."""
    if isinstance(exc, socket.gaierror):
        return explain_resolve_error(exc, addr, url)
    if exc.errno not in (errno.ECONNREFUSED, errno.ENETUNREACH) or not _is_loopback(addr.host):
        return None
    hint = net_namespace_hint()
    if hint is None:
        return None
    why = (
        f"{hint}, so {addr.host} here is this namespace's own loopback: a server listening on "
        f"the host's (or another container's) loopback is not reachable at this address. "
        f"Reach it through an address of a veth pair or bridge between the namespaces, or run "
        f"both in one network namespace"
    )
    if exc.errno == errno.ENETUNREACH:
        return ChannelBroken(
            f"cannot connect to {url}: the network is unreachable: the loopback interface of "
            f"this network namespace is down (ip link set lo up brings it up); {why}",
            endpoint=url,
        )
    return ConnectionRefused(
        f"nothing is listening at {url} in this network namespace: {why}; or start the "
        f"server in this namespace, or pass reconnect=SECONDS to keep trying until it is up",
        endpoint=url,
    )

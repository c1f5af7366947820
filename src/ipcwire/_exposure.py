"""The one warning a network listener logs when it takes connections from other machines
without TLS: the same words for every mechanism (tcp, http, ws, grpc, sse).

"Beyond this machine" is a bind address that is not loopback: an address of an interface,
``0.0.0.0`` or ``::`` (every interface); a host name counts by what it resolves to.
"""

from __future__ import annotations

import ipaddress
import logging
import socket

__all__ = ["beyond_this_machine", "warn_if_exposed"]

log = logging.getLogger("ipcwire")


def _is_loopback(literal: str) -> bool | None:
    """Whether an IP literal is loopback; None when ``literal`` is not an IP address."""
    try:
        ip = ipaddress.ip_address(literal.strip("[]").split("%", maxsplit=1)[0])  # fe80::1%eth0
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def beyond_this_machine(host: str) -> bool:
    """True when a listener bound to ``host`` can take connections from other machines.

    An empty host is loopback (ipcwire binds 127.0.0.1 then); a name that does not resolve
    is not (the bind fails with its own error).
    """
    if not host or host == "localhost":
        return False
    loopback = _is_loopback(host)
    if loopback is not None:
        return not loopback
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return False
    return any(_is_loopback(str(info[4][0])) is False for info in infos)


def warn_if_exposed(
    url: str,
    host: str,
    *,
    token: bytes | None,
    tls: bool,
    tls_fix: str = "ssl= (an SSLContext)",
    sent_in: str | None = None,
) -> None:
    """Log one warning when the listener at ``url`` (bound to ``host``) takes connections
    from other machines without TLS.

    With no token: anyone who can reach the port is a client. With a token: the warning
    says where the token travels in cleartext (``sent_in``, e.g. "in every request's
    Authorization header"); a mechanism whose token never crosses the wire (tcp's
    challenge-response) passes ``sent_in=None`` and gets no warning when it has a token.
    ``tls_fix`` is how that mechanism turns TLS on (e.g. "ssl= (an SSLContext) with
    https://").
    """
    if tls or not beyond_this_machine(host):
        return
    if token is None:
        log.warning(
            "%s listens beyond this machine with no token and no TLS: anyone who can "
            "reach the port can connect, send it messages and read its replies. Pass token= "
            "(a shared secret) and %s, or listen on 127.0.0.1 for clients on this machine only",
            url,
            tls_fix,
        )
    elif sent_in is not None:
        log.warning(
            "%s listens beyond this machine with a token but no TLS: the token travels in "
            "cleartext %s, so anyone on the path can read it (and every message and reply) "
            "and then connect as a client. Pass %s, or listen on 127.0.0.1 for clients on "
            "this machine only",
            url,
            sent_in,
            tls_fix,
        )

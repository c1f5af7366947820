"""A client whose host vanished (no FIN, no RST: a silent partition, then the client killed)
must not keep its stream for the kernel's ~15 minutes of retransmissions.

Before, the server's keepalive comments sat in the retransmission queue until tcp_retries2 ran
out (a walkthrough in network namespaces: about 15 minutes; ws and grpc notice in 40 s).
Now each stream's TCP socket has TCP_USER_TIMEOUT (two keepalive intervals, at least 1 s):
what the client does not acknowledge in that time ends the connection, and the stream's resume
window starts. Checked here on the server's real socket (this process's descriptors): a
partition cannot be built on loopback without a network namespace, which the walkthrough
did (see the commit message for its timing).
"""

from __future__ import annotations

import os
import socket

import pytest

import ipcwire
from ipcwire.sse._server import unacked_limit

TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", None)


def _server_side(port: int, client_port: int) -> socket.socket | None:
    """The server's end of the connection from ``client_port``, among this process's fds."""
    for name in os.listdir("/proc/self/fd"):
        try:
            s = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        try:
            if (
                s.family == socket.AF_INET
                and s.type == socket.SOCK_STREAM
                and s.getsockname()[1] == port
                and s.getpeername()[1] == client_port
            ):
                return s
        except OSError:
            pass
        s.close()
    return None


@pytest.mark.skipif(TCP_USER_TIMEOUT is None, reason="the OS has no TCP_USER_TIMEOUT (not Linux)")
@pytest.mark.parametrize("keepalive", [0.2, 15.0])
def test_a_streams_socket_bounds_unacknowledged_writes(keepalive: float) -> None:
    assert TCP_USER_TIMEOUT is not None
    with ipcwire.listen("sse+http://127.0.0.1:0/events", keepalive=keepalive) as lis:
        port = int(lis.url.rsplit(":", 1)[1].split("/")[0])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert c.recv(4096).startswith(b"HTTP/1.1 200")  # the stream is open
            s = _server_side(port, c.getsockname()[1])
            assert s is not None
            with s:
                ms = s.getsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT)
    # before: 0 (the kernel's default: tcp_retries2, about 15 minutes)
    assert ms == round(unacked_limit(keepalive) * 1000)
    assert ms == (1000 if keepalive == 0.2 else 30000)

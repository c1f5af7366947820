"""A client that sends half a request head and waits (slowloris): what the server does."""

from __future__ import annotations

import socket

__all__ = ["slow_head"]


def slow_head(url: str, start: bytes) -> bytes:
    """Connect to ``url``'s host and port, send ``start`` (half a request head) and wait for
    the server's answer: b"" once it closes the connection. A 20 s guard: the listeners in
    the tests give a head 0.3 s."""
    host, port = url.split("//")[1].split("/", maxsplit=1)[0].rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(start)
        sock.settimeout(20)
        return sock.recv(4096)

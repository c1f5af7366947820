"""close() while the client reconnects over TLS to a server that accepted the TCP connection
but does not answer the handshake (a frozen server: its kernel still accepts; or anything
else listening on the port now): close() and the pending recv() end at once, not when the
connect timeout runs out."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tests._loops import AioRun
from tests._threads import finished, in_thread
from tests.ws._tls import tls_contexts

import ipcwire
from ipcwire import aio
from ipcwire.channel import Channel
from ipcwire.errors import ChannelClosed
from ipcwire.sse.blocking import SseListener, SseServerChannel

CONNECT_TIMEOUT = 60.0  # the client's timeout=: before, close() waited this long
BOUND = 10.0  # what the test allows close() and the recv (the DELETE gets 1 s of it)


@contextmanager
def one_stream(tmp_path: Path) -> Iterator[tuple[SseListener, int, ssl.SSLContext]]:
    """A TLS listener (telling clients retry: 10 ms), its port, and a client's TLS context."""
    server_ctx, client_ctx = tls_contexts(tmp_path)
    listener = ipcwire.listen("sse+https://127.0.0.1:0/events", ssl=server_ctx, retry=0.01)
    assert isinstance(listener, SseListener)
    try:
        yield listener, int(listener.url.rsplit(":", 1)[1].split("/")[0]), client_ctx
    finally:
        listener.close()


def silence(server: Channel, listener: SseListener, port: int) -> socket.socket:
    """Drop the client's connection, close the listener and take its port with a TCP
    listener that never answers: the client's next attempt hangs in its TLS handshake."""
    assert isinstance(server, SseServerChannel)
    server.drop_connection()
    server.close()
    listener.close()
    silent = socket.socket()
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    silent.bind(("127.0.0.1", port))
    silent.listen(8)
    return silent


def test_close_while_reconnecting_over_tls_does_not_wait_for_the_handshake(
    tmp_path: Path,
) -> None:
    with one_stream(tmp_path) as (listener, port, client_ctx):
        client = ipcwire.connect(listener.url, ssl=client_ctx, timeout=CONNECT_TIMEOUT)
        server = listener.accept(timeout=10)
        server.send(b"a")
        assert client.recv(timeout=10) == b"a"
        with silence(server, listener, port) as silent:
            reading, box = in_thread(client.recv)
            conn, _ = silent.accept()  # the client is in its TLS handshake now
            with conn:
                started = time.monotonic()
                closing, _ = in_thread(client.close)
                assert finished(closing, BOUND), "close() waited for the TLS handshake"
                assert finished(reading, BOUND - (time.monotonic() - started))
                assert isinstance(box[0], ChannelClosed), box


def test_asyncio_close_while_reconnecting_over_tls_ends_the_pending_recv(
    tmp_path: Path, aio_run: AioRun
) -> None:
    async def main(listener: SseListener, port: int, client_ctx: ssl.SSLContext) -> None:
        client = await aio.connect(listener.url, ssl=client_ctx, timeout=CONNECT_TIMEOUT)
        try:
            server = await asyncio.to_thread(listener.accept, timeout=10)
            server.send(b"a")
            assert await client.recv(timeout=10) == b"a"
            with await asyncio.to_thread(silence, server, listener, port) as silent:
                reading = asyncio.ensure_future(client.recv())
                conn, _ = await asyncio.to_thread(silent.accept)  # in its TLS handshake now
                with conn:
                    await asyncio.wait_for(client.aclose(), BOUND)
                    with pytest.raises(ChannelClosed):
                        await asyncio.wait_for(reading, 2.0)  # (before: the connect timeout)
        finally:
            await client.aclose()

    with one_stream(tmp_path) as (listener, port, client_ctx):
        aio_run(main(listener, port, client_ctx))

"""grpc:// pointed at a server that speaks HTTP/1 (an ipcwire http:// listener) says that
something listens there but does not speak gRPC, on both APIs, streams and unary calls.

It raised 'ConnectionRefused nothing is listening at grpc://...: start the server first'
(and reconnect= kept trying): grpcio's "Failed parsing HTTP/2 ... http1.x server" was only in
the tail of the message.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from pathlib import Path

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelBroken, ConnectionRefused, RemoteProtocolError


def _check(err: RemoteProtocolError) -> None:
    assert not isinstance(err, ConnectionRefused)
    assert "does not speak gRPC (HTTP/2)" in str(err), err
    assert "HTTP/1" in str(err), err


@pytest.mark.parametrize("unary", [False, True])
@pytest.mark.parametrize("where", ["http://127.0.0.1:0", "http+unix://{tmp}/h.sock"])
def test_grpc_to_an_http1_server(where: str, unary: bool, tmp_path: Path) -> None:
    with ipcwire.listen(where.format(tmp=tmp_path), codec="json") as http:
        url = "grpc" + http.url[len("http") :].rstrip("/")
        with pytest.raises(RemoteProtocolError) as blocking:
            ch = ipcwire.connect(url, codec="json", timeout=5, reconnect=5, unary=unary)
            with ch:
                ch.request(1, timeout=5)
        _check(blocking.value)

        async def main() -> None:
            ch = await aio.connect(url, codec="json", timeout=5, reconnect=5, unary=unary)
            async with ch:
                await ch.request(1, timeout=5)

        with pytest.raises(RemoteProtocolError) as asyncio_err:
            asyncio.run(main())
        _check(asyncio_err.value)


def _ipcwire_server(where: str, tmp: Path) -> tuple[ipcwire.Listener, str]:
    """An ipcwire server that is not gRPC, serving, and the grpc URL of its address."""
    lst = ipcwire.listen(where.format(tmp=tmp))
    threading.Thread(target=lst.serve, args=(lambda ch: None,), daemon=True).start()
    if lst.url.startswith("unix:"):
        return lst, "grpc+unix://" + lst.url[len("unix://") :]
    host_port = lst.url.split("://", 1)[1].split("/", 1)[0]
    return lst, f"grpc://{host_port}"


@pytest.mark.parametrize("where", ["tcp://127.0.0.1:0", "ws://127.0.0.1:0/", "unix://{tmp}/u.sock"])
def test_grpc_to_a_server_that_closes_without_http2(where: str, tmp_path: Path) -> None:
    """grpc:// at an ipcwire tcp:// or ws:// server, grpc+unix:// at a unix:// one: the
    server reads gRPC's first bytes as a bad handshake and closes. The message said 'is it a
    TLS endpoint? Then connect to grpcs:// with cafile=', also on a Unix socket (where gRPC
    has no TLS here), and nothing about the server not speaking gRPC. Now it says so, and to
    check the URL's scheme; TLS is mentioned on TCP only. Both APIs."""
    lst, url = _ipcwire_server(where, tmp_path)
    with lst:

        def check(err: BaseException) -> None:
            text = str(err)
            assert type(err) is ChannelBroken, repr(err)
            assert "does not speak gRPC (HTTP/2)" in text, text
            assert "scheme" in text and url in text, text
            if url.startswith("grpc+unix:"):
                assert "TLS" not in text and "grpcs" not in text, text
            else:
                assert "grpcs://" in text, text

        with pytest.raises(ChannelBroken) as blocking:
            ipcwire.connect(url, timeout=5).close()
        check(blocking.value)

        async def main() -> None:
            ch = await aio.connect(url, timeout=5)
            await ch.aclose()

        with pytest.raises(ChannelBroken) as asyncio_err:
            asyncio.run(main())
        check(asyncio_err.value)


def test_grpc_to_a_tls_tcp_server(tls_files: tuple[Path, Path]) -> None:
    """grpc:// at an ipcwire tcp:// server with TLS: Python's TLS server resets the
    connection on gRPC's first bytes, which said only 'nothing is listening ... start the
    server first'. A reset is still ConnectionRefused (a server going away resets the
    connections it had not accepted yet; reconnect= tries again), but the message now says
    that what listens may not speak gRPC, and, if it serves TLS, to connect with grpcs://."""
    cert, key = tls_files
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    with ipcwire.listen("tcp://127.0.0.1:0", ssl=ctx) as lst:
        threading.Thread(target=lst.serve, args=(lambda ch: None,), daemon=True).start()
        url = "grpc://" + lst.url.split("://", 1)[1]
        with pytest.raises(ConnectionRefused) as info:
            ipcwire.connect(url, timeout=5).close()
        assert "does not speak gRPC (HTTP/2)" in str(info.value), info.value
        assert "grpcs://" in str(info.value), info.value

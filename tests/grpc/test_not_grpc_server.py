"""grpc:// pointed at a server that speaks HTTP/1 (an ipcwire http:// listener) says that
something listens there but does not speak gRPC, on both APIs, streams and unary calls.

It raised 'ConnectionRefused nothing is listening at grpc://...: start the server first'
(and reconnect= kept trying): grpcio's "Failed parsing HTTP/2 ... http1.x server" was only in
the tail of the message.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import ConnectionRefused, RemoteProtocolError


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

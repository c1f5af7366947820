"""Review of gRPC errors, deadlines, closing and the two drivers side by side (helper-39):
TLS failures at connect, polling with timeout=0, what a closed listener leaves behind."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import AuthenticationFailed, ChannelBroken, IpcwireError


def _blocking_error(url: str, **kw: Any) -> IpcwireError:
    with pytest.raises(IpcwireError) as info:
        if kw.pop("unary", False):
            with ipcwire.connect(url, unary=True, **kw) as ch:
                ch.request(b"x", timeout=10)
        else:
            ipcwire.connect(url, timeout=10, **kw).close()
    return info.value


def _asyncio_error(url: str, **kw: Any) -> IpcwireError:
    async def main() -> None:
        if kw.pop("unary", False):
            async with await aio.connect(url, unary=True, **kw) as ch:
                await ch.request(b"x", timeout=10)
        else:
            await (await aio.connect(url, timeout=10, **kw)).aclose()

    with pytest.raises(IpcwireError) as info:
        asyncio.run(main())
    return info.value


@pytest.mark.parametrize("unary", [False, True])
def test_tls_failures_at_connect_are_not_connection_refused(
    tls_files: tuple[Path, Path], unary: bool
) -> None:
    """A certificate that does not name the host, and a server that requires a client
    certificate we do not have, were ConnectionRefused ("nothing is listening at ...") on both
    drivers, and a plaintext client of a TLS server too: grpcio says "failed to connect to all
    addresses" for every connect failure. docs/errors.md: a misnamed certificate is
    AuthenticationFailed; the table of docs/mechanisms/grpc.md: UNAVAILABLE otherwise is
    ChannelBroken."""
    cert, key = tls_files
    with (
        ipcwire.listen("grpcs://127.0.0.1:0", certfile=cert, keyfile=key) as tls,
        ipcwire.listen("grpcs://127.0.0.1:0", certfile=cert, keyfile=key, client_ca=cert) as mtls,
    ):
        cases: list[tuple[str, dict[str, Any], type[IpcwireError], str]] = [
            (tls.url, {"cafile": cert, "server_hostname": "elsewhere"}, AuthenticationFailed,
             "server_hostname="),
            (mtls.url, {"cafile": cert}, AuthenticationFailed, "certfile="),
            (tls.url.replace("grpcs:", "grpc:"), {}, ChannelBroken, "grpcs://"),
        ]  # fmt: skip
        for url, kw, kind, hint in cases:
            for get in (_blocking_error, _asyncio_error):
                err = get(url, unary=unary, **kw)
                assert type(err) is kind, (get.__name__, url, err)
                assert err.endpoint == url and hint in str(err)
        # and the right certificates still work
        with ipcwire.connect(tls.url, cafile=cert, timeout=10) as ch:
            assert ch.statistics().messages_sent == 0

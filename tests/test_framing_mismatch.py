"""A client writing NDJSON lines to a length-framing server is told the framings differ
(HandshakeError, as a codec mismatch is), and the server logs the refusal and serves others.
Before, the client saw "closed the connection during the handshake" (ChannelBroken) or,
without a handshake, its first recv() broke: the server took the line's first 4 bytes for a
length prefix and dropped it silently (INFO, "an oversized handshake frame").

The other way round (a length-framing client, an NDJSON server without a token) stays a
Timeout whose message asks for the same framing on both sides: such a server has no
handshake to answer with (docs/protocol.md section 3).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

import ipcwire
import ipcwire.aio
from ipcwire.errors import HandshakeError

BOUND = 5.0
WORDS = "the framings differ: the client writes lines of JSON (framing='ndjson')"


def _url(scheme: str, tmp_path: Path) -> str:
    return f"unix://{tmp_path}/f.sock" if scheme == "unix" else "tcp://127.0.0.1:0"


@pytest.mark.parametrize("client_token", [None, "s3cret"])
@pytest.mark.parametrize("server_token", [None, "s3cret"])
@pytest.mark.parametrize("scheme", ["unix", "tcp"])
def test_blocking_server(
    scheme: str,
    server_token: str | None,
    client_token: str | None,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ipcwire")
    with ipcwire.listen(_url(scheme, tmp_path), token=server_token, codec="json") as lst:
        with pytest.raises(HandshakeError, match="framings differ") as err:
            ch = ipcwire.connect(
                lst.url, framing="ndjson", codec="json", token=client_token, timeout=BOUND
            )
            with ch:
                ch.send({"a": 1})
                ch.recv(timeout=BOUND)
        assert err.value.endpoint == lst.url
        # the server still serves a client that agrees
        with ipcwire.connect(lst.url, codec="json", token=server_token, timeout=BOUND) as ok:
            peer = lst.accept(timeout=BOUND)
            ok.send({"b": 2})
            assert peer.recv(timeout=BOUND) == {"b": 2}
            peer.close()
    refused = [r for r in caplog.records if WORDS in r.getMessage()]
    assert refused and refused[0].levelno == logging.WARNING, caplog.text


@pytest.mark.parametrize("scheme", ["unix", "tcp"])
def test_asyncio_server_and_client(scheme: str, tmp_path: Path) -> None:
    async def main() -> None:
        async with await ipcwire.aio.listen(_url(scheme, tmp_path), token="s3cret") as lst:
            for token in (None, "s3cret"):
                with pytest.raises(HandshakeError, match="framings differ"):
                    ch = await ipcwire.aio.connect(
                        lst.url, framing="ndjson", codec="json", token=token, timeout=BOUND
                    )
                    async with ch:
                        await ch.send({"a": 1})
                        await ch.recv(timeout=BOUND)

    asyncio.run(main())

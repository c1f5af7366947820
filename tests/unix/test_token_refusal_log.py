"""What a server logs when a client refuses it over the token, on both APIs. Before, a client
with another token was logged only as 'INFO ... dropped pid N: it closed the connection during
the handshake', and a client with a token refusing a server without one as a handler that
'went away without closing the channel: its process was killed'. Now a client says why it
leaves (never the token or a proof), and a client that hangs up at the token proof without a
word (an older ipcwire) is logged at WARNING as most likely having a different token."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
import threading
from collections.abc import Callable

import pytest
from tests._loops import AioRun

import ipcwire
from ipcwire import aio
from ipcwire.errors import AuthenticationFailed, IpcwireError

SECRET = "s3cret-right"
WRONG = "s3cret-wrong"


def _old_client(url: str) -> None:
    """A client as ipcwire 0.x wrote it: hello with a nonce, read the welcome, hang up."""
    hello = json.dumps({"ipcwire": 1, "codec": "bytes", "framing": "length",
                        "max_frame": 1 << 20, "nonce": "00" * 16}).encode()  # fmt: skip
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(url.removeprefix("unix://"))
        s.sendall(struct.pack(">I", len(hello)) + hello)
        (n,) = struct.unpack(">I", s.recv(4, socket.MSG_WAITALL))
        assert b"proof" in s.recv(n, socket.MSG_WAITALL)


def _new_client(url: str, api: str) -> None:
    with pytest.raises(AuthenticationFailed):
        if api == "blocking":
            ipcwire.connect(url, token=WRONG, timeout=10).close()
        else:

            async def main() -> None:
                (await aio.connect(url, token=WRONG, timeout=10)).close()

            asyncio.run(main())


def _warned(caplog: pytest.LogCaptureFixture, what: str) -> list[str]:
    out = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    for m in out:
        assert SECRET not in m and WRONG not in m and 'proof":' not in m
    return [m for m in out if what in m]


CLIENTS: dict[str, Callable[[str], None]] = {
    "old": _old_client,
    "blocking": lambda url: _new_client(url, "blocking"),
    "asyncio": lambda url: _new_client(url, "asyncio"),
}


@pytest.mark.parametrize("client", list(CLIENTS))
def test_blocking_server_warns_of_a_different_token(
    client: str, unix_url: Callable[[], str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ipcwire")
    with ipcwire.listen(unix_url(), token=SECRET) as lst:
        CLIENTS[client](lst.url)
        # the acceptor logs it as it sees the client go; a second client's handshake after
        # it shows the first was handled
        with ipcwire.connect(lst.url, token=SECRET, timeout=10), lst.accept(timeout=10):
            pass
    assert len(_warned(caplog, "most likely has a different token=")) == 1, caplog.text


@pytest.mark.parametrize("client", list(CLIENTS))
def test_asyncio_server_warns_of_a_different_token(
    client: str, aio_run: AioRun, unix_url: Callable[[], str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ipcwire")

    async def main() -> None:
        lst = await aio.listen(unix_url(), token=SECRET)
        try:
            await asyncio.to_thread(CLIENTS[client], lst.url)
            async with await aio.connect(lst.url, token=SECRET, timeout=10):
                (await lst.accept(timeout=10)).close()
        finally:
            lst.close()

    aio_run(main())
    assert len(_warned(caplog, "most likely has a different token=")) == 1, caplog.text


@pytest.mark.parametrize("api", ["blocking", "asyncio"])
def test_a_client_refusing_a_tokenless_server_says_why(
    api: str, unix_url: Callable[[], str]
) -> None:
    """The server's handler is told the client refused it, not that it was killed."""
    ended: list[IpcwireError] = []
    with ipcwire.listen(unix_url()) as lst:
        done = threading.Event()

        def serve() -> None:
            with lst.accept(timeout=10) as ch:
                try:
                    ch.recv(timeout=10)
                except IpcwireError as exc:
                    ended.append(exc)
            done.set()

        t = threading.Thread(target=serve)
        t.start()
        _new_client_with_token(lst.url, api)
        t.join(10)
    assert ended and "the client has a token= and this server asks for none" in str(ended[0])
    assert "killed" not in str(ended[0])


def _new_client_with_token(url: str, api: str) -> None:
    with pytest.raises(AuthenticationFailed, match="does not ask for a token"):
        if api == "blocking":
            ipcwire.connect(url, token=SECRET, timeout=10).close()
        else:

            async def main() -> None:
                (await aio.connect(url, token=SECRET, timeout=10)).close()

            asyncio.run(main())

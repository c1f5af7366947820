"""A token given in the URL (``?token=``, a documented way to pass it) is a secret: it is read
into the options and never shown. It was part of the listener's url, so a unix or shm
listener sent it to any client that connected without one, inside its handshake refusal
("the client at unix:///x.sock?token=hunter2 sent something that is not an ipcwire
handshake"): a local user read it there, connected with it, and sent a pickle that ran as
the server's user (helper-92). It was also in ``listener.url``, ``ch.url``, ``repr``, every
error's message and endpoint, and log lines.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from pathlib import Path

import pytest

import ipcwire
from ipcwire import aio
from ipcwire._core.url import parse_url, redact
from ipcwire.errors import ConnectionRefused, IpcwireError

SECRET = "hunter2-very-secret"


def test_redact_keeps_everything_but_the_token() -> None:
    assert redact(f"unix:///x.sock?token={SECRET}&codec=json") == "unix:///x.sock?codec=json"
    assert redact(f"unix:///x.sock?codec=json&token={SECRET}") == "unix:///x.sock?codec=json"
    assert redact(f"tcp://127.0.0.1:7?token={SECRET}") == "tcp://127.0.0.1:7"
    assert redact("tcp://127.0.0.1:7?codec=json") == "tcp://127.0.0.1:7?codec=json"
    endpoint = parse_url(f"unix:@app?tok%65n={SECRET}&codec=json")
    assert endpoint.url == "unix:@app?codec=json"
    assert endpoint.params["token"] == SECRET  # still read, as the option


@pytest.mark.parametrize("scheme", ["unix", "shm"])
def test_an_unauthenticated_client_is_not_told_the_token(
    scheme: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "p.sock"
    caplog.set_level(logging.INFO, logger="ipcwire")
    with ipcwire.listen(f"{scheme}://{path}?token={SECRET}", codec="json") as lst:
        assert SECRET not in lst.url and SECRET not in repr(lst)
        threading.Thread(target=lst.serve, args=(lambda ch: None,), daemon=True).start()
        with socket.socket(socket.AF_UNIX) as raw:  # garbage instead of a hello
            raw.settimeout(10)
            raw.connect(str(path))
            raw.sendall(b"\x00\x00\x00\x05hello")
            answer = b""
            while chunk := raw.recv(65536):
                answer += chunk
        assert b"not an ipcwire handshake" in answer, answer
        assert SECRET.encode() not in answer, answer
        with socket.socket(socket.AF_UNIX) as raw:  # a hello of another protocol version
            raw.settimeout(10)
            raw.connect(str(path))
            hello = b'{"ipcwire": 2, "codec": "json"}'
            raw.sendall(len(hello).to_bytes(4, "big") + hello)
            answer = b""
            while chunk := raw.recv(65536):
                answer += chunk
        assert b"protocol 2" in answer and SECRET.encode() not in answer, answer
        with ipcwire.connect(f"{scheme}://{path}?token={SECRET}", codec="json") as ch:
            assert SECRET not in ch.url and SECRET not in repr(ch)
    assert SECRET not in caplog.text


def test_errors_and_asyncio_channels_do_not_show_it(tmp_path: Path) -> None:
    with pytest.raises(ConnectionRefused) as err:
        ipcwire.connect(f"unix://{tmp_path}/none.sock?token={SECRET}", timeout=1)
    assert SECRET not in str(err.value) and SECRET not in (err.value.endpoint or "")
    with pytest.raises(IpcwireError) as bad:
        ipcwire.connect(f"tcp://127.0.0.1:99999?token={SECRET}")
    assert SECRET not in str(bad.value), bad.value

    async def main() -> None:
        url = f"tcp://127.0.0.1:0?token={SECRET}&codec=json"
        async with await aio.listen(url) as lst:
            assert SECRET not in lst.url
            port = lst.url.split(":")[2].split("?")[0]
            client = f"tcp://127.0.0.1:{port}?token={SECRET}&codec=json"
            async with await aio.connect(client) as ch:
                assert SECRET not in ch.url and SECRET not in repr(ch)

    asyncio.run(main())


@pytest.mark.parametrize(
    "url",
    [
        "ws://127.0.0.1:0/x",
        "http://127.0.0.1:0/x",
        "grpc://127.0.0.1:0",
        "sse+http://127.0.0.1:0/e",
        "tcp://127.0.0.1:0",
    ],
)
def test_no_listener_shows_it(url: str) -> None:
    with ipcwire.listen(f"{url}?token={SECRET}") as lst:
        assert SECRET not in lst.url and SECRET not in repr(lst)

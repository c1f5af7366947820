"""http://, ws://, grpc:// and sse+http:// listeners bound beyond loopback without TLS log one
warning naming the endpoint and the fix (TLS, or 127.0.0.1), as tcp:// does; with a token
the warning says the token travels in cleartext. On loopback, or with TLS, nothing.
Before, these listeners said nothing on 0.0.0.0, with or without a token (rest.md asks for
TLS off loopback). Both APIs; the listeners are real (bound to every interface)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from tests._loops import AioRun
from tests.tcp.test_exposed_warning import _listen_both, _warnings
from tests.ws._tls import tls_contexts

import ipcwire
from ipcwire._exposure import warn_if_exposed

# (plain URL on every interface, the TLS scheme the warning names)
EXPOSED = [
    ("http://0.0.0.0:0", "https://"),
    ("http://[::]:0/api", "https://"),
    ("ws://0.0.0.0:0/", "wss://"),
    ("grpc://0.0.0.0:0", "grpcs://"),
    ("sse+http://0.0.0.0:0/events", "sse+https://"),
]


@pytest.mark.parametrize(("url", "tls_scheme"), EXPOSED)
def test_every_interface_without_tls_or_token_warns(
    url: str, tls_scheme: str, caplog: pytest.LogCaptureFixture, aio_run: AioRun
) -> None:
    with caplog.at_level(logging.WARNING, logger="ipcwire"):
        urls = _listen_both(url, aio_run)
    said = _warnings(caplog)
    assert len(said) == 2, said  # one per listener
    for real, text in zip(urls, said, strict=True):
        assert real in text
        assert "listens beyond this machine with no token and no TLS" in text
        assert "token=" in text and tls_scheme in text and "127.0.0.1" in text


@pytest.mark.parametrize(("url", "tls_scheme"), EXPOSED)
def test_every_interface_with_a_token_but_no_tls_warns_of_the_cleartext_token(
    url: str, tls_scheme: str, caplog: pytest.LogCaptureFixture, aio_run: AioRun
) -> None:
    with caplog.at_level(logging.WARNING, logger="ipcwire"):
        urls = _listen_both(url, aio_run, token="s3cret")
    said = _warnings(caplog)
    assert len(said) == 2, said
    for real, text in zip(urls, said, strict=True):
        assert real in text
        assert "with a token but no TLS" in text and "cleartext" in text
        assert tls_scheme in text and "127.0.0.1" in text


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:0",
        "http://localhost:0",
        "ws://127.0.0.1:0/",
        "grpc://127.0.0.1:0",
        "grpc://localhost:0",
        "sse+http://127.0.0.1:0/events",
    ],
)
@pytest.mark.parametrize("token", [None, "s3cret"])
def test_loopback_logs_nothing(
    url: str, token: str | None, caplog: pytest.LogCaptureFixture, aio_run: AioRun
) -> None:
    with caplog.at_level(logging.WARNING, logger="ipcwire"):
        _listen_both(url, aio_run, token=token)
    assert _warnings(caplog) == []


@pytest.mark.parametrize("token", [None, "s3cret"])
def test_tls_on_every_interface_logs_nothing(
    token: str | None, tmp_path: Path, caplog: pytest.LogCaptureFixture, aio_run: AioRun
) -> None:
    server_ctx, _ = tls_contexts(tmp_path)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    with caplog.at_level(logging.WARNING, logger="ipcwire"):
        _listen_both("https://0.0.0.0:0", aio_run, ssl=server_ctx, token=token)
        _listen_both("wss://0.0.0.0:0/", aio_run, ssl=server_ctx, token=token)
        _listen_both("grpcs://0.0.0.0:0", aio_run, certfile=cert, keyfile=key, token=token)
        _listen_both("sse+https://0.0.0.0:0/events", aio_run, ssl=server_ctx, token=token)
    assert _warnings(caplog) == []


def test_the_words_are_tcps(caplog: pytest.LogCaptureFixture) -> None:
    """With no token, the shared warning (its defaults) says exactly what tcp:// says, so
    tcp's listener could log it through the same function."""
    with (
        caplog.at_level(logging.WARNING, logger="ipcwire"),
        ipcwire.listen("tcp://0.0.0.0:0") as lst,
    ):
        warn_if_exposed(lst.url, "0.0.0.0", token=None, tls=False)
    tcp_said, shared_said = _warnings(caplog)
    assert tcp_said == shared_said

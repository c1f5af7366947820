"""gRPC review (rev-grpc): TLS files that cannot be used are the caller's mistake, said as
such, and never abort the process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests._threads import BOUND

import ipcwire
from ipcwire import aio
from ipcwire.channel import Channel
from ipcwire.errors import ConfigurationError

# A client given half a certificate pair, in a child: grpc's core checks it with an assertion
# that aborts the whole process (SIGABRT), so it cannot be tried in the test's own process.
HALF_PAIR = """
import asyncio, sys, ipcwire
from ipcwire import aio
from ipcwire.errors import ConfigurationError
driver, unary, cert, which = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4]
kw = {which: cert, "cafile": cert, "unary": unary, "timeout": 5}
url = "grpcs://127.0.0.1:9"  # nothing listens there: the files are refused before any call
try:
    if driver == "blocking":
        with ipcwire.connect(url, **kw) as ch:
            ch.request(b"x", timeout=5)
    else:
        async def main():
            async with await aio.connect(url, **kw) as ch:
                await ch.request(b"x", timeout=5)
        asyncio.run(main())
except ConfigurationError as exc:
    print("ConfigurationError", exc.endpoint, exc, flush=True)
except Exception as exc:
    print(type(exc).__name__, exc, flush=True)
"""


@pytest.mark.parametrize("which", ["certfile", "keyfile"])
@pytest.mark.parametrize("unary", [False, True])
@pytest.mark.parametrize("driver", ["blocking", "asyncio"])
def test_a_client_with_half_a_certificate_pair_is_told_not_killed(
    tls_files: tuple[Path, Path], driver: str, unary: bool, which: str
) -> None:
    """connect(certfile=) without keyfile= (or the other way round) made grpc's core abort
    the process ("Check failed: private_key != nullptr", SIGABRT) at the first connection
    attempt, whatever the caller would have done with an exception."""
    cert, key = tls_files
    path = cert if which == "certfile" else key
    done = subprocess.run(
        [sys.executable, "-c", HALF_PAIR, driver, "1" if unary else "0", str(path), which],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ConfigurationError grpcs://127.0.0.1:9 "), done.stdout
    assert "certfile= and keyfile=" in done.stdout


@pytest.fixture(scope="module")
def unusable(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A file that is no PEM at all, and a private key that belongs to no certificate here."""
    d = tmp_path_factory.mktemp("grpc-unusable")
    junk, other = d / "junk.pem", d / "other-key.pem"
    junk.write_text("not a certificate\n")
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-out", str(other)],
        check=True, capture_output=True,
    )  # fmt: skip
    return {"junk": junk, "other": other}


def _blocking_listen(url: str, **kw: Any) -> None:
    ipcwire.listen(url, **kw).close()


def _asyncio_listen(url: str, **kw: Any) -> None:
    async def main() -> None:
        await (await aio.listen(url, **kw)).aclose()

    asyncio.run(main())


@pytest.mark.parametrize("listen", [_blocking_listen, _asyncio_listen])
@pytest.mark.parametrize("where", ["grpcs://127.0.0.1:0", "grpc+unix"])
def test_a_listener_whose_tls_files_cannot_be_used_says_so(
    tls_files: tuple[Path, Path],
    unusable: dict[str, Path],
    sock_dir: Path,
    where: str,
    listen: Callable[..., None],
) -> None:
    """A key that does not belong to the certificate, a certificate or client CA that is not
    PEM: grpc only says it could not bind, and the listener raised AddressInUse ('gRPC could
    not bind 127.0.0.1:0 (taken just now?)') for a port that was free."""
    cert, key = tls_files
    url = f"grpc+unix://{sock_dir}/t.sock" if where == "grpc+unix" else where
    cases = [
        ({"certfile": cert, "keyfile": unusable["other"]}, "certfile= and keyfile="),
        ({"certfile": unusable["junk"], "keyfile": key}, "certfile= and keyfile="),
        ({"certfile": cert, "keyfile": key, "client_ca": unusable["junk"]}, "client_ca="),
    ]
    for kw, named in cases:
        with pytest.raises(ConfigurationError) as info:
            listen(url, **kw)
        assert info.value.endpoint == url and named in str(info.value), kw
        assert sorted(p.name for p in sock_dir.iterdir()) == [], kw  # nothing left behind
    listen(url, certfile=cert, keyfile=key, client_ca=cert)  # and the right files work


def _blocking_connect(url: str, **kw: Any) -> None:
    with ipcwire.connect(url, timeout=5, **kw) as ch:
        ch.request(b"x", timeout=5)


def _asyncio_connect(url: str, **kw: Any) -> None:
    async def main() -> None:
        async with await aio.connect(url, timeout=5, **kw) as ch:
            await ch.request(b"x", timeout=5)

    asyncio.run(main())


@pytest.mark.parametrize("unary", [False, True])
@pytest.mark.parametrize("connect", [_blocking_connect, _asyncio_connect])
def test_a_client_whose_tls_files_cannot_be_used_says_so(
    tls_files: tuple[Path, Path],
    unusable: dict[str, Path],
    connect: Callable[..., None],
    unary: bool,
) -> None:
    """A CA file that is not PEM (or is a key), a client key that does not belong to the
    client certificate: grpc cannot build its TLS handshaker, and the client said
    ConnectionRefused ('nothing is listening at ...: start the server first') of a server
    that was listening, and reconnect= retried it for as long as it was given."""
    cert, key = tls_files
    with ipcwire.listen("grpcs://127.0.0.1:0", certfile=cert, keyfile=key, client_ca=cert) as lis:
        t = threading.Thread(target=lis.serve, args=(_echo,), daemon=True)
        t.start()
        retry = {} if unary else {"reconnect": 60}  # (a refusal would be retried that long)
        cases = [
            {"cafile": unusable["junk"]},
            {"cafile": key},
            {"cafile": cert, "certfile": cert, "keyfile": unusable["other"]},
            {"cafile": cert, "certfile": unusable["junk"], "keyfile": key},
        ]
        for kw in cases:
            with pytest.raises(ConfigurationError) as info:
                connect(lis.url, unary=unary, **retry, **kw)
            assert info.value.endpoint == lis.url and "keyfile=" in str(info.value), kw
        connect(lis.url, unary=unary, cafile=cert, certfile=cert, keyfile=key)  # these work
    t.join(BOUND)


def _echo(ch: Channel) -> None:
    for msg in ch:
        ch.send(msg)

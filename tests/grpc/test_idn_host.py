"""An internationalised host name works over grpc:// as over tcp://: grpcio is given its
ASCII form (``bücher.example`` as ``xn--bcher-kva.example``, Python's ``idna`` codec, what
getaddrinfo gets for tcp://), and a host name tcp:// refuses is InvalidURL here too.

Before, ``grpc://bücher.example:80`` failed with grpcio's "Misformatted domain name" while
``grpc://xn--bcher-kva.example:80`` was looked up. The end-to-end test resolves the name
through a hosts file bind-mounted over /etc/hosts in a private mount namespace (``unshare
-m``) of a child process: the machine's /etc/hosts is untouched."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ipcwire
from ipcwire._core.url import parse_url
from ipcwire.errors import InvalidURL
from ipcwire.grpc._address import resolve


@pytest.mark.parametrize(
    ("url", "target", "shown"),
    [
        ("grpc://bücher.example:80", "xn--bcher-kva.example:80", "grpc://bücher.example:80"),
        ("grpcs://日本.example:443", "xn--wgv71a.example:443", "grpcs://日本.example:443"),
        ("grpc://xn--bcher-kva.example:80", "xn--bcher-kva.example:80", None),
        ("grpc://[::1]:5", "[::1]:5", "grpc://[::1]:5"),
        ("grpc://127.0.0.1:5", "127.0.0.1:5", "grpc://127.0.0.1:5"),
    ],
)
def test_grpcio_gets_the_ascii_form(url: str, target: str, shown: str | None) -> None:
    addr = resolve(parse_url(url), listening=False)
    assert addr.target() == target
    assert addr.url(tls=url.startswith("grpcs")) == (shown or url)  # (the URL as written)


@pytest.mark.parametrize("url", ["grpc://a..b:80", "grpc://" + "x" * 64 + ".example:80"])
def test_a_host_tcp_refuses_is_invalid_url(url: str) -> None:
    with pytest.raises(InvalidURL, match="not a valid host name") as info:
        ipcwire.connect(url, timeout=2)
    assert url in str(info.value)


CHILD = """
import asyncio, sys, ipcwire
from ipcwire import aio
with ipcwire.listen("grpc://127.0.0.1:0", codec="json") as lst:
    url = "grpc://bücher.example:" + lst.url.rsplit(":", 1)[1]
    c = ipcwire.connect(url, codec="json", timeout=5)
    with c, lst.accept(timeout=5) as s:
        c.send("blocking")
        print(s.recv(timeout=5))

async def main():
    async with await aio.listen("grpc://bücher.example:0", codec="json") as lst:
        url = "grpc://bücher.example:" + lst.url.rsplit(":", 1)[1]
        c = await aio.connect(url, codec="json", timeout=5)
        async with c, await lst.accept(timeout=5) as s:
            await c.send("asyncio")
            print(await s.recv(timeout=5))

asyncio.run(main())
"""


def test_an_idn_host_resolves_and_connects(tmp_path: Path) -> None:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("needs unshare(1) and mount(8) (util-linux) for a private /etc/hosts")
    hosts = tmp_path / "hosts"
    hosts.write_text(Path("/etc/hosts").read_text() + "\n127.0.0.1 xn--bcher-kva.example\n")
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    probe = subprocess.run(
        ["unshare", "-m", "true"], capture_output=True, text=True, timeout=10, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here (unshare -m: {probe.stderr.strip()})")
    res = subprocess.run(
        [
            "unshare",
            "-m",
            "sh",
            "-c",
            'mount --bind "$0" /etc/hosts && exec "$1" "$2"',
            str(hosts),
            sys.executable,
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["blocking", "asyncio"], (res.stdout, res.stderr[-2000:])

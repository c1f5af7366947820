"""A file name's bytes in a URL: percent-escaped bytes that are not UTF-8 (``%FF``) name the
file with exactly those bytes, and listen(), connect() and ``listener.url`` agree on it (before,
``unix:///d/%FF.sock`` made a file named U+FFFD, the same one as ``%FE``); under an ASCII locale
(LC_ALL=C PYTHONUTF8=0) a path that locale cannot encode is InvalidURL naming the URL and the
fix (before, a bare UnicodeEncodeError from deep in each mechanism), and a URL from argv says
what the locale did to it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import InvalidURL


def _names(d: Path) -> list[bytes]:
    return sorted(os.listdir(os.fsencode(d)))


@pytest.mark.parametrize("scheme", ["unix", "fifo", "spool", "shm"])
def test_escaped_bytes_name_that_file(tmp_path: Path, scheme: str) -> None:
    url = f"{scheme}://{tmp_path}/%FF.x"
    with ipcwire.listen(url) as lst:
        assert lst.url == url
        made = _names(tmp_path)
        assert b"\xff.x" in made, made
        assert "\ufffd" not in os.fsdecode(b"".join(made))
        with ipcwire.connect(lst.url, timeout=3) as ch:
            ch.send(b"ping")
            with lst.accept(timeout=3) as srv:
                assert srv.recv(timeout=3) == b"ping"
        # %FE is another file, not the same U+FFFD one
        with ipcwire.listen(f"{scheme}://{tmp_path}/%FE.x"):
            assert {b"\xff.x", b"\xfe.x"} <= set(_names(tmp_path))
    assert _names(tmp_path) in ([], [b"\xfe.x", b"\xff.x"])  # a spool's directory stays


def test_escaped_bytes_asyncio_unix(tmp_path: Path) -> None:
    url = f"unix://{tmp_path}/%FF%C3%A9.sock"

    async def main() -> None:
        async with await aio.listen(url) as lst:
            assert lst.url == url
            assert _names(tmp_path) == [b"\xff\xc3\xa9.sock"]
            async with await aio.connect(url, timeout=3) as ch:
                await ch.send(b"ping")
                async with await lst.accept(timeout=3) as srv:
                    assert await srv.recv(timeout=3) == b"ping"

    asyncio.run(main())


def test_escaped_bytes_abstract_unix() -> None:
    url = f"unix:@ipcwire-test-{os.getpid()}-%FF"
    with ipcwire.listen(url) as lst:
        assert lst.url == url
        table = Path("/proc/net/unix").read_bytes()
        assert f"@ipcwire-test-{os.getpid()}-".encode() + b"\xff\n" in table
        with ipcwire.connect(url, timeout=3) as ch, lst.accept(timeout=3) as srv:
            ch.send(b"x")
            assert srv.recv(timeout=3) == b"x"


@pytest.mark.parametrize(
    "url",
    [
        "mq:///ipcwire-%FF",
        "http+unix:///tmp/%FF.sock",
        "ws+unix:///tmp/%FF.sock",
        "grpc+unix:///tmp/%FF.sock",
    ],
)
def test_text_schemes_refuse_bytes(url: str) -> None:
    with pytest.raises(InvalidURL, match="not UTF-8 text") as info:
        ipcwire.listen(url)
    assert url in str(info.value)


_CHILD = """
import asyncio, os, sys
import ipcwire
from ipcwire import aio
d = sys.argv[1]
def attempt(fn):
    try:
        fn()
        return "OK"
    except ipcwire.IpcwireError as exc:
        return type(exc).__name__ + " " + ascii(str(exc))
    except Exception as exc:
        return "UNTYPED " + repr(exc)
def both(url):
    def blocking():
        ipcwire.listen(url).close()
    async def asyncio_listen():
        await (await aio.listen(url)).aclose()
    def connect():
        ipcwire.connect(url, timeout=0).close()
    print(attempt(blocking), attempt(lambda: asyncio.run(asyncio_listen())), attempt(connect))
for scheme in ["unix", "fifo", "spool", "shm", "ws+unix", "http+unix", "grpc+unix"]:
    both(scheme + "://" + d + "/\\u00e9.x")
both("mq:///ipcwire-\\u00e9")
# percent-escaped, the same bytes work in this locale
u = "unix://" + d + "/%C3%A9.sock"
with ipcwire.listen(u) as l, ipcwire.connect(u, timeout=3) as c, l.accept(timeout=3) as s:
    c.send(b"hi")
    print("ESCAPED", l.url == u, sorted(os.listdir(os.fsencode(d))), s.recv(timeout=3))
print("ARGV", attempt(lambda: ipcwire.connect(sys.argv[2], timeout=0)))
"""


def test_ascii_locale(tmp_path: Path) -> None:
    env = dict(os.environ, LC_ALL="C", PYTHONUTF8="0")
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(_CHILD),
            str(tmp_path),
            f"unix://{tmp_path}/\u00e9.sock",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    *rows, escaped, argv = out
    assert len(rows) == 8
    for row in rows:
        for result in row.split(" InvalidURL")[1:]:
            assert "cannot be encoded in this locale's file-system encoding (ascii" in result
            assert "PYTHONUTF8=1" in result
        assert row.count("InvalidURL") == 3, row
    assert "percent-escape the path's bytes: unix://" in rows[0]
    assert "%C3%A9.x" in rows[0]
    assert escaped == "ESCAPED True [b'\\xc3\\xa9.sock'] b'hi'"
    assert argv.startswith("ARGV InvalidURL"), argv
    assert "cannot decode" in argv and "LC_ALL=C" in argv and "PYTHONUTF8=1" in argv
    assert f"unix://{tmp_path}/%C3%A9.sock" in argv
    assert "write the URL in UTF-8" not in argv
    assert os.listdir(tmp_path) == []

"""A client checks who the server is (SO_PEERCRED) before it sends anything.

Whoever binds a name first got the clients: a uid that took an abstract name before the real
server (no file mode protects one) received the clients' requests, and tokens' proofs, and
its forged replies were accepted; ``connect(url, allow_uids=[...])`` was an unknown option.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from tests._loops import AioRun
from tests._proc import NOBODY, python, wait_line

import ipcwire
from ipcwire import aio
from ipcwire.errors import PermissionDenied

# A squatter that is not even ipcwire: it prints what each client sent before it went.
RAW_SQUATTER = """
import socket
s = socket.socket(socket.AF_UNIX)
s.bind(b"\\0" + {name!r}.encode())
s.listen()
print("ready", flush=True)
for _ in range({count}):
    conn, _ = s.accept()
    got = b""
    while chunk := conn.recv(65536):
        got += chunk
    print(repr(got), flush=True)
    conn.close()
"""

# An ipcwire server that lets every uid in, answering each request with a forgery.
ECHO_FOR_ALL = """
import ipcwire
lst = ipcwire.listen({url!r}, allow_uids=range(65536))
print("ready", flush=True)
lst.serve(lambda ch: [ch.send(b"from nobody: " + m) for m in ch])
"""


@contextmanager
def as_nobody(code: str) -> Iterator[subprocess.Popen[str]]:
    proc = python(code, as_nobody=True)
    try:
        assert wait_line(proc) == "ready"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=20)


def test_an_abstract_name_taken_by_another_uid_is_refused_before_anything_is_sent(
    abstract_url: Callable[[], str], aio_run: AioRun
) -> None:
    url = abstract_url()
    with as_nobody(RAW_SQUATTER.format(name=url[len("unix:@") :], count=2)) as proc:
        assert proc.stdout is not None
        with pytest.raises(PermissionDenied) as blocking:
            ipcwire.connect(url, token="s3cret", timeout=5)
        assert proc.stdout.readline().strip() == "b''"  # no hello, no token proof

        async def main() -> None:
            await aio.connect(url, token="s3cret", timeout=5)

        with pytest.raises(PermissionDenied) as asyncio_:
            aio_run(main())
        assert proc.stdout.readline().strip() == "b''"
    for exc in (blocking.value, asyncio_.value):
        text = str(exc)
        assert f"pid {proc.pid}" in text and f"uid {NOBODY}" in text, text
        assert f"allow_uids=[{NOBODY}]" in text and url in text, text


def test_allow_uids_names_the_uid_an_abstract_server_may_run_as(
    abstract_url: Callable[[], str], aio_run: AioRun
) -> None:
    url = abstract_url()
    with as_nobody(ECHO_FOR_ALL.format(url=url)):
        with ipcwire.connect(url, allow_uids=[NOBODY], timeout=5) as ch:
            assert ch.request(b"hi", timeout=5) == b"from nobody: hi"
            assert ch.peer is not None and ch.peer.uid == NOBODY

        async def main() -> bytes:
            ch = await aio.connect(url, allow_uids=[NOBODY], timeout=5)
            try:
                reply = await ch.request(b"hi", timeout=5)
                assert isinstance(reply, bytes)
                return reply
            finally:
                await ch.aclose()

        assert aio_run(main()) == b"from nobody: hi"
        with pytest.raises(PermissionDenied, match=r"trusts only uid\(s\) \[1\]"):
            ipcwire.connect(url, allow_uids=[1], timeout=5)


def test_a_socket_path_is_checked_when_allow_uids_is_given(
    unix_url: Callable[[], str], aio_run: AioRun
) -> None:
    url = unix_url()
    me = os.getuid()
    with ipcwire.listen(url) as lst:
        with pytest.raises(PermissionDenied, match=f"of uid {me}, and this client trusts only"):
            ipcwire.connect(url, allow_uids=[NOBODY], timeout=5)

        async def refused() -> None:
            await aio.connect(url, allow_uids=[NOBODY], timeout=5)

        with pytest.raises(PermissionDenied, match=f"of uid {me}, and this client trusts only"):
            aio_run(refused())
        with ipcwire.connect(url, allow_uids=[me], timeout=5) as ch:  # and by default: anyone
            ch.send(b"x")
            with lst.accept(timeout=5) as server:
                assert server.recv(timeout=5) == b"x"

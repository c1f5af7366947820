"""Non-ASCII queue names mean the same queue in every locale, and never crash the interpreter.

posix_ipc 1.3.2 encodes a str name with the file-system encoding and dereferences NULL when
that fails: ``ipcwire.connect('mq:///é')`` under ``LC_ALL=C PYTHONUTF8=0`` (file-system encoding
ascii) died of SIGSEGV. ipcwire hands posix_ipc the name's UTF-8 bytes (``kernel_name``), so the
crash cannot happen and ``é`` is the same queue under a UTF-8 and an ASCII locale.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading

import posix_ipc
import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import ConnectionRefused, InvalidURL
from ipcwire.mq._queue import MessageQueue

from .conftest import fresh_name

ASCII = {"LC_ALL": "C", "PYTHONUTF8": "0"}
UTF8 = {"LC_ALL": "C.UTF-8", "PYTHONUTF8": "1"}


def _run(code: str, env: dict[str, str]) -> str:
    """Run ``code`` in a child interpreter under ``env``; its stdout. It must not die of a
    signal (the segfault) nor fail."""
    full = {k: v for k, v in os.environ.items() if k not in ("LANG", "LC_CTYPE", "PYTHONUTF8")}
    full.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full,
        capture_output=True,
        timeout=30,
        check=False,
    )
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode >= 0, f"child killed by {signal.Signals(-proc.returncode).name}: {err}"
    assert proc.returncode == 0, f"child failed ({proc.returncode}): {err}"
    return proc.stdout.decode("ascii").strip()


def _name() -> str:
    return fresh_name() + "-\xe9\u65e5"


def test_the_child_really_runs_with_an_ascii_file_system_encoding() -> None:
    assert _run("import sys; print(sys.getfilesystemencoding())", ASCII) == "ascii"


def test_connect_to_a_non_ascii_name_under_an_ascii_locale_is_an_error_not_a_crash() -> None:
    name = _name()
    out = _run(
        f"""
        import ipcwire
        try:
            ipcwire.connect({"mq://" + name!a}, timeout=1)
        except Exception as exc:
            print(type(exc).__name__)
        """,
        ASCII,
    )
    assert out  # it raised (nothing listens there), and the interpreter lived to say so


@pytest.mark.parametrize(("first", "second"), [(ASCII, UTF8), (UTF8, ASCII)])
def test_a_non_ascii_queue_name_is_the_same_queue_in_every_locale(
    first: dict[str, str], second: dict[str, str]
) -> None:
    name = _name()
    try:
        _run(
            f"""
            from ipcwire.mq._queue import MessageQueue
            with MessageQueue.create({name!a}) as q:
                q.send(b"from the first", timeout=2)
            """,
            first,
        )
        out = _run(
            f"""
            from ipcwire.mq._queue import MessageQueue
            with MessageQueue.open({name!a}) as q:
                print(q.recv(timeout=2)[0].decode())
                q.unlink()
            """,
            second,
        )
        assert out == "from the first"
        # and its kernel name is the UTF-8 of what was asked for, whatever the locale
        with pytest.raises(ConnectionRefused):
            MessageQueue.open(name).close()
    finally:
        try:
            posix_ipc.unlink_message_queue(name)
        except posix_ipc.ExistentialError:
            pass


def test_a_name_from_bytes_that_are_not_utf8_round_trips_and_is_removed() -> None:
    # how Python decodes a command-line argument holding the byte 0xff
    base = fresh_name()
    name = base + "-\udcff"
    with MessageQueue.create(name) as q:
        posix_ipc.MessageQueue(base.encode() + b"-\xff", 0).close()  # its kernel name
        q.send(b"x", timeout=2)
        with MessageQueue.open(name) as other:
            assert other.recv(timeout=2) == (b"x", 0)
        q.unlink()
    with pytest.raises(ConnectionRefused):
        MessageQueue.open(name).close()


def test_a_lone_surrogate_with_no_bytes_is_invalid_url() -> None:
    with pytest.raises(InvalidURL, match="surrogate"):
        MessageQueue.create(fresh_name() + "-\ud800")


CHANNEL = """
    import ipcwire, threading
    url = {url!a}
    with ipcwire.listen(url) as lst:
        box = []
        t = threading.Thread(target=lambda: box.append(ipcwire.connect(url, timeout=5)))
        t.start()
        with lst.accept(timeout=5) as server:
            t.join(10)
            with box[0] as client:
                client.send(b"ping")
                server.send(server.recv(timeout=5) + b"/pong")
                print(client.recv(timeout=5).decode())
"""


def test_a_channel_with_a_non_ascii_name_under_a_utf8_locale() -> None:
    assert _run(CHANNEL.format(url="mq://" + _name()), UTF8) == "ping/pong"


def test_a_non_ascii_name_in_process_blocking_and_asyncio() -> None:
    url = "mq://" + _name()
    box: list[ipcwire.Channel] = []
    with ipcwire.listen(url) as lst:
        t = threading.Thread(target=lambda: box.append(ipcwire.connect(url, timeout=5)))
        t.start()
        with lst.accept(timeout=5) as server:
            t.join(10)
            with box[0] as client:
                client.send(b"hi")
                assert server.recv(timeout=5) == b"hi"

    async def main() -> bytes:
        async with await aio.listen(url) as alst:
            client_task = asyncio.ensure_future(aio.connect(url, timeout=5))
            async with await alst.accept(timeout=5) as aserver, await client_task as aclient:
                await aserver.send(b"yo")
                got: bytes = await aclient.recv(timeout=5)
                return got

    assert asyncio.run(main()) == b"yo"

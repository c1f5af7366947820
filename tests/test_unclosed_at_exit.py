"""A program that ends with a client channel still open (never closed, its last reference a
module global) exits at once, whatever the mechanism, while its server goes on; and its server
gets every message it sent, then a clean end.

Before, a gRPC client dropped so (closed by its finalizer while the interpreter cleared its
modules, its RPC not ended by a server still running) started a thread to drain the stream:
a thread started while the interpreter finalizes never runs, ``Thread.start()`` waited for
it, and the program never exited (CI: tests/grpc/test_release.py, 1 run in 40 under load;
here, every time).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests._exit import program_ends
from tests._proc import exited_within, python, wait_line

import ipcwire
from ipcwire.errors import EndOfChannel

URLS = [
    "unix://{tmp}/u.sock",
    "tcp://127.0.0.1:0",
    "ws://127.0.0.1:0/x",
    "ws+unix://{tmp}/w.sock",
    "http://127.0.0.1:0/r",
    "grpc://127.0.0.1:0",
    "grpc+unix://{tmp}/g.sock",
    "shm://unclosed-at-exit",
    "mq:///unclosed-at-exit?maxmsg=2",  # (queues count against the user's RLIMIT_MSGQUEUE)
    "fifo://{tmp}/f",
    "udp://127.0.0.1:0",
]


@pytest.mark.parametrize("url", URLS, ids=lambda u: u.split(":")[0])
def test_a_program_ending_with_a_client_open_exits(url: str, tmp_path: Path) -> None:
    with ipcwire.listen(url.format(tmp=tmp_path)) as lst:
        proc = python(
            f"""
            import ipcwire
            client = ipcwire.connect({lst.url!r}, timeout=10)
            client.send(b"hello", timeout=10)
            print("sent", flush=True)
            input()  # until the server has read it: then the program ends
            """
        )
        try:
            assert wait_line(proc) == "sent"
            with lst.accept(timeout=10) as server:
                assert server.recv(timeout=10) == b"hello"
                assert proc.stdin is not None
                proc.stdin.write("\n")
                proc.stdin.flush()
        finally:
            code = exited_within(proc, 20)
        assert code == 0, "the program did not exit (killed after 20 s)"


# every one but udp, which is unreliable and has no end to see
DELIVERING = [u for u in URLS if not u.startswith("udp:")]


@pytest.mark.parametrize("url", DELIVERING, ids=lambda u: u.split(":")[0])
def test_a_program_ending_with_a_client_open_delivers_everything(url: str, tmp_path: Path) -> None:
    """Where the process held what it sent (grpc, http: their sender threads) it went with
    the process, and where it did not (ws, mq) the end looked like a crash (ChannelBroken):
    grpc, http and ws clients are now closed at exit (ipcwire._atexit, ipcwire.grpc._sync),
    and an mq channel collected while the interpreter finalizes ends cleanly. The rest were
    already so: the kernel delivers what a socket, FIFO or queue holds."""
    _, got, end = program_ends(url.format(tmp=tmp_path), count=100, size=8000)
    assert got == list(range(100))
    assert isinstance(end, EndOfChannel), end

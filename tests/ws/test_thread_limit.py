"""A blocking WebSocket listener at its process's thread limit drops the client it cannot
start a handshake thread for, says so once, and serves the next clients once threads can start
again.

Before, the acceptor thread died ("ERROR ipcwire: the acceptor of ws://... failed"), with the
client already counted among those in their handshake: the socket stayed, the kernel queued
connections, nothing answered them (every client timed out in its handshake, for ever), and
the program was never told (close() then raised, joining the thread that never started). A
thread of the connection's own that could not start (websockets' reader, its keepalive) left
the client waiting until its timeout, its socket open. The limit is real: the server runs in
a pids cgroup whose ``pids.max`` the test sets. With ``backlog=1``, a client left counted
would also have kept the listener full for good.
"""

from __future__ import annotations

import pytest
from tests._proc import child, wait_line
from tests.shm._pids import thread_limit

import ipcwire
from ipcwire.errors import IpcwireError, Timeout

SERVER = """
import logging, sys
import ipcwire
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")
with ipcwire.listen("ws://127.0.0.1:0/x", backlog=1) as lst:
    print(lst.url, flush=True)
    ch = lst.accept(timeout=20)
    ch.send(ch.recv(timeout=20))
    print("served", flush=True)
    ch.close()
"""


def first_client(url: str) -> IpcwireError | None:
    """How the first client's channel ended (the connection is dropped during or right
    after its handshake); None if it was served."""
    try:
        with ipcwire.connect(url, timeout=5) as ch:
            ch.recv(timeout=5)
    except IpcwireError as exc:
        return exc
    return None


# 0: the handshake thread cannot start (the acceptor's); 1: the connection's reading thread
# (websockets', started in the handshake thread); 2: its keepalive thread (after the 101)
@pytest.mark.parametrize("more", [0, 1, 2])
def test_a_client_without_a_thread_is_dropped_and_the_next_is_served(more: int) -> None:
    with thread_limit() as limit, child(SERVER) as proc:
        url = wait_line(proc)
        limit.add(proc.pid)
        limit.hold(more)  # no new thread in the server from now on (but `more`)
        dropped = first_client(url)
        assert dropped is not None and not isinstance(dropped, Timeout), dropped  # not ignored
        limit.lift()
        with ipcwire.connect(url, timeout=5) as ch:
            assert ch.request(b"ping", timeout=5) == b"ping"
        assert wait_line(proc) == "served"
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
    assert "Exception in thread" not in err and "ERROR" not in err, err
    warnings = [line for line in err.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, err
    assert url in warnings[0], warnings[0]
    assert "pids.max" in warnings[0] and "max_channels" in warnings[0], warnings[0]

"""A blocking gRPC listener at its process's thread limit refuses the client it has no pool
thread for, says so once, and serves the next clients once threads can start again.

Before, grpcio's serving thread died of the ``RuntimeError: can't start new thread`` that the
listener's pool raised when it could not start a thread for a new stream ("Exception in
thread ... (_serve)"): the port stayed open, clients connected, and nothing answered them
(every client timed out, for ever), and the program was never told. The limit is real: the
server runs in a pids cgroup whose ``pids.max`` the test sets.
"""

from __future__ import annotations

import pytest
from tests._proc import child, wait_line
from tests.shm._pids import thread_limit

import ipcwire
from ipcwire.errors import ResourceExhausted

SERVER = """
import logging, sys
import ipcwire
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")
with ipcwire.listen("grpc://127.0.0.1:0") as lst:
    print(lst.url, flush=True)
    first = lst.accept(timeout=20)  # holds the pool's only thread
    first.send(first.recv(timeout=20))
    print("first", flush=True)
    later = []
    for _ in range(2):  # two at once, each holding a pool thread
        ch = lst.accept(timeout=20)
        ch.send(ch.recv(timeout=20))
        later.append(ch)
    print("served", flush=True)
    for ch in [first, *later]:
        ch.close()
"""


def test_a_client_without_a_thread_is_refused_and_the_next_is_served() -> None:
    with thread_limit() as limit, child(SERVER) as proc:
        url = wait_line(proc)
        with ipcwire.connect(url, timeout=5) as first:
            assert first.request(b"one", timeout=5) == b"one"  # its pool thread is busy now
            assert wait_line(proc) == "first"
            limit.add(proc.pid)
            limit.hold()  # no new thread in the server from now on
            with (
                pytest.raises(ResourceExhausted, match="cannot start a thread"),
                ipcwire.connect(url, timeout=5) as ch,
            ):
                ch.request(b"refused", timeout=5)
            limit.lift()
            # The refused RPC's work item is still queued in the pool: the thread started for
            # the next client finds it done. The one after must get a thread of its own too.
            with ipcwire.connect(url, timeout=5) as two, ipcwire.connect(url, timeout=5) as three:
                assert two.request(b"two", timeout=5) == b"two"
                assert three.request(b"three", timeout=5) == b"three"
                assert wait_line(proc) == "served"
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
    assert "Exception in thread" not in err and "ERROR" not in err, err
    warnings = [line for line in err.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, err
    assert url in warnings[0], warnings[0]
    assert "pids.max" in warnings[0] and "max_channels" in warnings[0], warnings[0]

"""A blocking shm listener at its process's thread limit refuses the client it cannot start a
thread for, says so once, and serves the next clients once threads can start again.

Before, the acceptor thread died of the ``RuntimeError: can't start new thread`` ("Exception in
thread ipcwire accept shm://..."): the socket stayed, the kernel queued connections, nothing
answered them (every client timed out in its handshake, for ever), and the program was never
told. The limit is real: the server runs in a pids cgroup whose ``pids.max`` the test sets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from tests._proc import child, wait_line

import ipcwire
import ipcwire.aio
from ipcwire.errors import ResourceExhausted

from ._pids import thread_limit

SERVER = """
import logging, sys
import ipcwire
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")
with ipcwire.listen({url!r}) as lst:
    print("ready", flush=True)
    ch = lst.accept(timeout=20)
    ch.send(ch.recv(timeout=20))
    print("served", flush=True)
    ch.close()
"""


def test_a_client_without_a_thread_is_refused_and_the_next_is_served(
    shm_url: Callable[[], str],
) -> None:
    url = shm_url()
    with thread_limit() as limit, child(SERVER.format(url=url)) as proc:
        assert wait_line(proc) == "ready"
        limit.add(proc.pid)
        limit.hold()  # no new thread in the server from now on
        with pytest.raises(ResourceExhausted, match="cannot start a thread for this connection"):
            ipcwire.connect(url, timeout=5)

        async def aio_client() -> None:
            await ipcwire.aio.connect(url, timeout=5)

        with pytest.raises(ResourceExhausted, match="cannot start a thread for this connection"):
            asyncio.run(aio_client())
        limit.lift()
        with ipcwire.connect(url, timeout=5) as ch:
            assert ch.request(b"ping", timeout=5) == b"ping"
        assert wait_line(proc) == "served"
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
    assert "Exception in thread" not in err
    warnings = [line for line in err.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 2, err  # one per refused client
    for line in warnings:
        assert url in line and "pids.max" in line and "max_channels" in line, line

"""A blocking gRPC client at its process's thread limit: a receive that cannot start its
reading thread raises ``ResourceExhausted`` naming the endpoint and the limit, nothing is
lost, and the next receive works once threads can start again.

Before, ``recv()`` raised the bare ``RuntimeError: can't start new thread`` of the reader
pump, and the channel kept that thread object that never ran as its reader: every later
``recv()`` waited for it (its whole timeout, or for ever), the messages the server had sent
never delivered. The limit is real: the client runs in a pids cgroup whose ``pids.max`` the
test sets.
"""

from __future__ import annotations

from tests._proc import child, wait_line
from tests.shm._pids import thread_limit

import ipcwire

CLIENT = """
import sys
import ipcwire
from ipcwire.errors import ResourceExhausted
with ipcwire.connect(sys.stdin.readline().strip(), codec="json", timeout=5) as ch:
    ch.send("hello")
    print("connected", flush=True)
    sys.stdin.readline()  # the limit holds now
    try:
        ch.recv(timeout=5)
        print("received", flush=True)
    except ResourceExhausted as exc:
        print("exhausted", exc, flush=True)
    sys.stdin.readline()  # lifted
    print("got", ch.recv(timeout=5), ch.recv(timeout=5), flush=True)
"""


def test_a_receive_without_a_thread_raises_resource_exhausted_and_loses_nothing() -> None:
    with (
        ipcwire.listen("grpc://127.0.0.1:0", codec="json") as srv,
        thread_limit() as limit,
        child(CLIENT) as proc,
    ):
        assert proc.stdin is not None
        proc.stdin.write(srv.url + "\n")
        proc.stdin.flush()
        with srv.accept(timeout=10) as ch:
            assert ch.recv(timeout=10) == "hello"
            assert wait_line(proc) == "connected"
            ch.send("one")
            ch.send("two")
            limit.add(proc.pid)
            limit.hold()  # no new thread in the client from now on
            proc.stdin.write("\n")
            proc.stdin.flush()
            said = wait_line(proc)
            assert said.startswith("exhausted"), said
            assert srv.url in said and "pids.max" in said, said
            limit.lift()
            proc.stdin.write("\n")
            proc.stdin.flush()
            assert wait_line(proc) == "got one two"
            _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
    assert "Traceback" not in err and "Exception in thread" not in err, err

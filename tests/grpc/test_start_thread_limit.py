"""Starting gRPC with too little room for its threads (a pids cgroup's ``pids.max``, ``ulimit
-u``) raises ``ResourceExhausted`` naming the endpoint, the limit and the fix, before gRPC is
called: blocking and asyncio, listen() and connect(); the process lives on.

Before, grpcio's core tried to start its threads for about 10 s ("pthread_create failed"),
then aborted the whole process (SIGABRT, "Failed to start lifeguard thread"): listen() and
connect() never returned. The limit is real: the child runs in a pids cgroup.
"""

from __future__ import annotations

from tests._proc import child, wait_line
from tests.shm._pids import thread_limit

CHILD = """
import asyncio, sys
import ipcwire
from ipcwire import aio
from ipcwire.errors import ResourceExhausted
from ipcwire.grpc._grpcio import threads_needed

print(threads_needed(), flush=True)
sys.stdin.readline()  # the limit holds now

def attempt(what, fn):
    try:
        fn()
        print(what, "started", flush=True)
    except ResourceExhausted as exc:
        print(what, "exhausted", exc, flush=True)

async def aio_listen():
    await aio.listen("grpc://127.0.0.1:0")

async def aio_connect():
    await aio.connect("grpc://127.0.0.1:1", timeout=2)

attempt("listen", lambda: ipcwire.listen("grpc://127.0.0.1:0"))
attempt("connect", lambda: ipcwire.connect("grpc+unix:///nonexistent/g.sock", timeout=2))
attempt("aio-listen", lambda: asyncio.run(aio_listen()))
attempt("aio-connect", lambda: asyncio.run(aio_connect()))
sys.stdin.readline()  # room for gRPC's threads now
with ipcwire.listen("grpc://127.0.0.1:0") as lst:
    print("listening", flush=True)
"""


def test_starting_grpc_without_room_for_its_threads_raises() -> None:
    with thread_limit() as limit, child(CHILD) as proc:
        assert proc.stdin is not None
        need = int(wait_line(proc))
        limit.add(proc.pid)
        limit.hold(more=need - 3)  # (grpcio's core aborted the process with so few)
        proc.stdin.write("\n")
        proc.stdin.flush()
        for what in ("listen", "connect", "aio-listen", "aio-connect"):
            said = wait_line(proc)
            assert said.startswith(f"{what} exhausted"), said
            assert "pids.max" in said and "ulimit -u" in said and "SIGABRT" in said, said
            assert "grpc" in said.split("exhausted", 1)[1], said  # the endpoint
        limit.hold(more=need)
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert wait_line(proc) == "listening"
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
    assert "Traceback" not in err and "lifeguard" not in err, err

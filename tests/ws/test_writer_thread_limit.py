"""A blocking WebSocket send at its process's thread limit: when the time runs out with part
of the message unwritten and no thread can be started to write the rest, ``send`` raises
``ResourceExhausted`` naming the limit and saying the message was handed over; the rest goes
out, in order, with the next send, and nothing is lost or sent twice. A send behind that rest
raises it too, having handed nothing over.

Before, the bare ``RuntimeError: can't start new thread`` of the writer's thread came out of
``send()``, which said nothing about the message. The limit is real: the client runs in a pids
cgroup whose ``pids.max`` the test sets.
"""

from __future__ import annotations

from tests._proc import child, wait_line
from tests.shm._pids import thread_limit

import ipcwire

MIB = 2**20

CLIENT = """
import sys
import ipcwire
from ipcwire.errors import ResourceExhausted
with ipcwire.connect(sys.stdin.readline().strip(), timeout=5) as ch:
    print("connected", flush=True)
    sys.stdin.readline()  # the limit holds now
    sent = 0
    for i in range(200):
        try:
            ch.send(bytes([i % 251]) * 2**20, timeout=0.3)
        except ResourceExhausted as exc:
            print("exhausted", i, exc, flush=True)
            break
        sent += 1
    else:
        print("never", flush=True)
    # Behind the rest nobody writes: refused, nothing of it handed over. (The server's
    # library goes on reading meanwhile: on a slow machine what is queued may drain, and a
    # send then goes out, whole or handed over: send until one is refused.)
    went = []
    for k in range(50):
        try:
            ch.send(b"refused-%d" % k, timeout=0.3)
        except ResourceExhausted as exc:
            if "Nothing of this message was sent" in str(exc):
                print("refused", exc, flush=True)
                break
        went.append(k)  # sent, or handed over: it arrives, in order
    else:
        print("never refused", flush=True)
    print("went", *went, flush=True)
    sys.stdin.readline()  # lifted; the server reads now
    ch.send(b"after", timeout=10)
    print("sent", flush=True)
    sys.stdin.readline()
"""


def test_a_send_without_a_writer_thread_raises_resource_exhausted_and_loses_nothing() -> None:
    with (
        ipcwire.listen("ws://127.0.0.1:0/x") as srv,
        thread_limit() as limit,
        child(CLIENT) as proc,
    ):
        assert proc.stdin is not None

        def tell(line: str = "") -> None:
            assert proc.stdin is not None
            proc.stdin.write(line + "\n")
            proc.stdin.flush()

        tell(srv.url)
        with srv.accept(timeout=10) as ch:
            assert wait_line(proc) == "connected"
            limit.add(proc.pid)
            limit.hold()  # no new thread in the client from now on
            tell()
            said = wait_line(proc, timeout=60)
            assert said.startswith("exhausted "), said
            handed = int(said.split()[1]) + 1  # the messages before it, and itself
            assert "pids.max" in said and "handed over" in said, said
            assert "127.0.0.1" in said, said
            said = wait_line(proc)
            # (On a slow machine the kernel's buffers may take the rest meanwhile: then every
            # send goes out, which loses nothing either; what went is checked below.)
            assert said == "never refused" or (
                said.startswith("refused ") and "Nothing of this message was sent" in said
            ), said
            went = [int(k) for k in wait_line(proc).split()[1:]]
            limit.lift()
            tell()
            for i in range(handed):
                got = ch.recv(timeout=10)
                assert got == bytes([i % 251]) * MIB, (i, len(got))
            for k in went:
                assert ch.recv(timeout=10) == b"refused-%d" % k
            assert ch.recv(timeout=10) == b"after"
            assert wait_line(proc) == "sent"
            tell()
            _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
    assert "Traceback" not in err and "Exception in thread" not in err, err

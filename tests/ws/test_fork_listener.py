"""A forked child that closes its copy of a blocking WebSocket listener leaves the parent's
clients alone, also those still in their handshake.

The child holds copies of the descriptors of every connection the parent's handshake threads
are working on. Its close() cut each with ``shutdown(2)``, which ends the connection for the
parent too: a client between its HTTP upgrade and its token (or in the middle of its request)
was dropped, and the parent never saw it in ``accept()``. (Its ready channels and the
listening socket were already left alone; tests/test_fork.py.) It runs in a fresh
interpreter, which forks.
"""

from __future__ import annotations

from tests._proc import run_python

CODE = """
import os, signal, ipcwire
from websockets.sync.client import connect

lst = ipcwire.listen("ws://127.0.0.1:0/x", codec="raw", token="s3cret")
# The upgrade is answered (101): the listener's handshake thread now waits for the token.
client = connect(lst.url, open_timeout=10)
pid = os.fork()
if pid == 0:
    signal.alarm(10)
    try:
        lst.close()
    except BaseException as exc:
        print("the child's close raised", repr(exc), flush=True)
        os._exit(1)
    os._exit(0)
_, status = os.waitpid(pid, 0)
assert status == 0, f"child status {status}"
client.send('{"token": "s3cret"}')
server = lst.accept(timeout=10)
server.send(b"welcome")
assert client.recv(timeout=10) == b"welcome"
client.close()
server.close()
lst.close()
print("ok")
"""


def test_a_forked_child_closing_the_listener_keeps_the_parents_handshakes() -> None:
    assert run_python(CODE) == "ok"

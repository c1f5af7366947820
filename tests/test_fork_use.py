"""A channel opened before a fork and then used in the child is refused there.

A prefork server that connects at import time (``gunicorn --preload``), a ``multiprocessing``
worker with the fork start method, a plain ``os.fork()``: the child holds a copy of its
parent's connection. Used from both, the messages of both processes mix on the one
connection and each process takes whichever reply comes first: with unix:// 1195 of 2000
replies were another request's, the ws children timed out while their parent got their
replies, http children got the server's "Invalid method" errors. Now send, send_many, recv,
recv_many and request raise ``LocalProtocolError`` in the child, naming the process that
opened the channel and saying to connect again in the child, before anything is sent or
received: the parent's channel goes on as if the child had not been there. (Pipe channels
are left alone: handing an open pipe to a forked child is their documented use.)

Each case runs in a fresh interpreter, which forks.
"""

from __future__ import annotations

import pytest
from tests._proc import run_python

# The child: every call on each channel copied from its parent must raise LocalProtocolError
# with the words below; then its close() of the copy, and a send after it is ChannelClosed.
# It prints what went wrong and exits 1, or exits 0.
CHILD = """
DEF in_child(channels):
    signal.alarm(10)  # a hang fails the test (status 14)
    parent = os.getppid()
    wrong = []
    for ch in channels:
        calls = {
            "send": lambda: ch.send(b"from the child"),
            "send_many": lambda: ch.send_many([b"a", b"b"]),
            "recv": lambda: ch.recv(timeout=0.5),
            "recv_many": lambda: ch.recv_many(timeout=0.5),
            "request": lambda: ch.request(b"child's request", timeout=0.5),
        }
        for name, call in calls.items():
            try:
                AWAIT call()
                wrong.append(f"{ch.url} {name}: no error")
            except ipcwire.LocalProtocolError as exc:
                said = str(exc)
                if f"opened in process {parent} and this is a child it forked" not in said or (
                    "connect again in the child" not in said
                ):
                    wrong.append(f"{ch.url} {name}: {said}")
            except Exception as exc:
                wrong.append(f"{ch.url} {name}: {type(exc).__name__}: {exc}")
        ch.close()
        try:
            AWAIT ch.send(b"x")
            wrong.append(f"{ch.url} send after close: no error")
        except ipcwire.ChannelClosed:
            pass
        except Exception as exc:
            wrong.append(f"{ch.url} send after close: {type(exc).__name__}: {exc}")
    for w in wrong:
        print("CHILD", w, flush=True)
    os._exit(1 if wrong else 0)
"""

BLOCKING = (
    """
import os, signal, threading, ipcwire

url, server_side = URL, SERVER_SIDE
"""
    + CHILD.replace("DEF", "def").replace("AWAIT ", "")
    + """
lst = ipcwire.listen(url)
box = []
t = threading.Thread(target=lambda: box.append(ipcwire.connect(lst.url, timeout=10)))
t.start()
server = lst.accept(timeout=10)
t.join(10)
client = box[0]
client.send(b"before")
assert server.recv(timeout=10) == b"before"
pid = os.fork()
if pid == 0:
    in_child([client, server] if server_side else [client])
_, status = os.waitpid(pid, 0)
assert status == 0, f"child status {status}"
# the parent's channel goes on: nothing of the child's came, nothing was taken from it
client.send(b"after the fork")
server.send(b"back")
assert server.recv(timeout=10) == b"after the fork"
assert client.recv(timeout=10) == b"back"
for ch in (client, server):
    try:
        ch.recv(timeout=0)
        raise AssertionError("a message from the child")
    except ipcwire.Timeout:
        pass
client.close()
server.close()
lst.close()
print("ok")
"""
)

ASYNCIO = (
    """
import asyncio, os, signal, ipcwire
from ipcwire import aio

url, server_side = URL, SERVER_SIDE
"""
    + CHILD.replace("DEF", "async def").replace("AWAIT ", "await ")
    + """

async def main():
    lst = await aio.listen(url)
    accepting = asyncio.ensure_future(lst.accept(timeout=10))
    client = await aio.connect(lst.url, timeout=10)
    server = await accepting
    await client.send(b"before")
    assert await server.recv(timeout=10) == b"before"
    pid = os.fork()
    if pid == 0:
        await in_child([client, server] if server_side else [client])
    _, status = os.waitpid(pid, 0)
    assert status == 0, f"child status {status}"
    await client.send(b"after the fork")
    await server.send(b"back")
    assert await server.recv(timeout=10) == b"after the fork"
    assert await client.recv(timeout=10) == b"back"
    for ch in (client, server):
        try:
            await ch.recv(timeout=0)
            raise AssertionError("a message from the child")
        except ipcwire.Timeout:
            pass
    await client.aclose()
    await server.aclose()
    await lst.aclose()
    print("ok")


asyncio.run(main())
"""
)


def _url(kind: str, tmp: str) -> tuple[str, bool]:
    """The URL to listen at, and whether the server's channel is one this fix covers."""
    return {
        "unix": (f"unix://{tmp}/s.sock", True),
        "tcp": ("tcp://127.0.0.1:0", True),
        "ws": ("ws://127.0.0.1:0/x", True),
        "ws+unix": (f"ws+unix://{tmp}/w.sock", True),
        "http": ("http://127.0.0.1:0/x", False),
        "http+unix": (f"http+unix://{tmp}/h.sock", False),
    }[kind]


def _run(template: str, kind: str, tmp: str) -> str:
    url, server_side = _url(kind, tmp)
    return run_python(template.replace("URL, SERVER_SIDE", f"{url!r}, {server_side!r}"), timeout=60)


@pytest.mark.parametrize("kind", ["unix", "tcp", "ws", "ws+unix", "http", "http+unix"])
def test_a_channel_used_in_a_forked_child_is_refused_there_and_the_parents_goes_on(
    kind: str, tmp_path: object
) -> None:
    out = _run(BLOCKING, kind, str(tmp_path))
    assert out.strip() == "ok", out


@pytest.mark.parametrize("kind", ["unix", "tcp", "ws", "ws+unix", "http", "http+unix"])
def test_an_asyncio_channel_used_in_a_forked_child_is_refused_there(
    kind: str, tmp_path: object
) -> None:
    out = _run(ASYNCIO, kind, str(tmp_path))
    assert out.strip() == "ok", out

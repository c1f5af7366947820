"""A gRPC channel used in a forked child: a typed error, not a silent loss.

grpc is not fork-safe (and ipcwire turns its fork support off): the child's copy of a channel
has no RPC behind it. Before, a child's ``send()`` returned normally and the message was
lost; ``recv(timeout=)`` waited out its timeout. Now every ``send``, ``recv`` and ``request``
in the child raises ``LocalProtocolError`` naming the endpoint and saying to connect again in
the child, on the client's and the server's channel, blocking, ``unary=True`` and asyncio.
Each case runs in a fresh interpreter, which forks.
"""

from __future__ import annotations

from tests._proc import run_python

# In the child: each call on each channel, and what it raised (exit at once after).
CHILD = """
def child(calls):
    out = []
    for name, call in calls:
        try:
            call()
            out.append(f"{name}: returned")
        except BaseException as exc:
            out.append(f"{name}: {type(exc).__name__}: {exc}")
    return out

def fork(calls):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, "\\n".join(child(calls)).encode())
        os._exit(0)
    os.close(w)
    got = b""
    while chunk := os.read(r, 65536):
        got += chunk
    os.waitpid(pid, 0)
    print(got.decode())
"""

BLOCKING = (
    "import os, ipcwire\n"
    + CHILD
    + """
with ipcwire.listen("grpc://127.0.0.1:0", codec="json") as srv:
    c = ipcwire.connect(srv.url, codec="json", timeout=10)
    p = srv.accept(timeout=10)
    u = ipcwire.connect(srv.url, codec="json", unary=True)
    fork([
        ("client send", lambda: c.send(1)),
        ("client send_many", lambda: c.send_many([1])),
        ("client recv", lambda: c.recv(timeout=5)),
        ("client request", lambda: c.request(1, timeout=5)),
        ("server send", lambda: p.send(1)),
        ("server recv", lambda: p.recv(timeout=5)),
        ("unary request", lambda: u.request(1, timeout=5)),
        ("unary send", lambda: u.send(1, timeout=5)),
    ])
    c.send("still")  # the parent's channel is untouched
    assert p.recv(timeout=10) == "still"
    c.close(); p.close(); u.close()
"""
)

ASYNCIO = (
    "import asyncio, os, ipcwire\nfrom ipcwire import aio\n"
    + CHILD
    + """
def run(coro_fn):
    def call():
        coro = coro_fn()
        try:
            coro.send(None)  # the first step: a fork-aware channel raises before any await
        except StopIteration:
            pass
        finally:
            coro.close()
    return call

async def main():
    async with await aio.listen("grpc://127.0.0.1:0", codec="json") as srv:
        c = await aio.connect(srv.url, codec="json", timeout=10)
        p = await srv.accept(timeout=10)
        fork([
            ("client send", run(lambda: c.send(1))),
            ("client recv", run(lambda: c.recv(timeout=5))),
            ("client request", run(lambda: c.request(1, timeout=5))),
            ("server send", run(lambda: p.send(1))),
            ("server recv", run(lambda: p.recv(timeout=5))),
        ])
        await c.send("still")
        assert await p.recv(timeout=10) == "still"
        await c.aclose(); await p.aclose()

asyncio.run(main())
"""
)


def _check(out: str, count: int) -> None:
    lines = out.splitlines()
    assert len(lines) == count, out
    for line in lines:
        assert ": LocalProtocolError: grpc://127.0.0.1:" in line, line
        assert "fork" in line and "connect again in the child" in line, line


def test_blocking_channels_in_a_forked_child_raise() -> None:
    _check(run_python(BLOCKING), 8)


def test_asyncio_channels_in_a_forked_child_raise() -> None:
    _check(run_python(ASYNCIO), 5)

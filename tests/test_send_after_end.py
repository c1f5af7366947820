"""Once receiving met the peer's end (killed: ChannelBroken; closed: EndOfChannel after its
goodbye), every later send raises ChannelBroken, in the same words on both APIs. Before, a
TCP socket took the first send after the peer was gone without an error (the peer's reset
comes back later) and that message was lost; on unix the kernel's EPIPE said it in other
words. A peer that only half-closed (a plain end of stream, no goodbye) may still read its
replies: sending goes on there."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests._loops import AioRun
from tests._proc import child, kill9, wait_line

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelBroken, EndOfChannel

SERVER = """
import ipcwire, threading
with ipcwire.listen({url!r}) as lst:
    print(lst.url, flush=True)
    ch = lst.accept(timeout=20)
    ch.recv(timeout=20)
    if {close}:
        ch.close()
    print("ready", flush=True)
    threading.Event().wait()
"""

URLS: dict[str, Callable[[Path], str]] = {
    "tcp": lambda d: "tcp://127.0.0.1:0",
    "unix": lambda d: f"unix://{d}/e.sock",
}
Server = tuple[str, str, Callable[[], None]]
ENDS = {"killed": ChannelBroken, "closed": EndOfChannel}


@pytest.fixture(params=[(s, e) for s in URLS for e in ENDS], ids=lambda p: f"{p[0]}-{p[1]}")
def server(request: pytest.FixtureRequest, sock_dir: Path) -> Iterator[Server]:
    """A server process that accepts one client, receives one message, then (``closed``)
    closes the channel; ``end()`` makes the end happen and returns when it has."""
    scheme, end = request.param
    code = SERVER.format(url=URLS[scheme](sock_dir), close=end == "closed")
    with child(code) as proc:
        url = wait_line(proc)

        def happen() -> None:
            assert wait_line(proc) == "ready"
            if end == "killed":
                kill9(proc)

        yield url, end, happen


def _expect_refused(err: BaseException | None, url: str) -> None:
    assert isinstance(err, ChannelBroken), repr(err)
    assert str(err).startswith(f"cannot send to {url}: "), str(err)


def test_blocking_sends_after_the_end_raise(impl: str, server: Server) -> None:
    url, end, happen = server
    with ipcwire.connect(url, timeout=10) as ch:
        ch.send(b"hello")
        happen()
        with pytest.raises(ENDS[end]):
            ch.recv(timeout=10)
        sends: list[Callable[[], None]] = [
            lambda: ch.send(b"x"),  # the native fast path, when built
            lambda: ch.send(b"x", timeout=5),
            lambda: ch.send_many([b"x", b"y"]),
            lambda: ch.send(b"x"),
        ]
        for send in sends:
            err: BaseException | None = None
            try:
                send()
            except BaseException as exc:
                err = exc
            _expect_refused(err, ch.url)


def test_asyncio_sends_after_the_end_raise(aio_run: AioRun, server: Server) -> None:
    url, end, happen = server

    async def main() -> None:
        async with await aio.connect(url, timeout=10) as ch:
            await ch.send(b"hello")
            happen()
            with pytest.raises(ENDS[end]):
                await ch.recv(timeout=10)
            for n in range(3):
                err: BaseException | None = None
                try:
                    if n == 1:
                        await ch.send_many([b"x", b"y"])
                    else:
                        await ch.send(b"x", timeout=5 if n else None)
                except BaseException as exc:
                    err = exc
                _expect_refused(err, ch.url)

    aio_run(main())


def test_blocking_replies_after_a_half_close(impl: str, unix_url: Callable[[], str]) -> None:
    """A client that ends its input (SHUT_WR, as ``nc -N``) still reads the replies."""
    with ipcwire.listen(unix_url(), framing="ndjson") as lst:
        path = lst.url.removeprefix("unix://")
        out: list[bytes] = []

        def client() -> None:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(10)
                s.connect(path)
                s.sendall(b'{"n": 1}\n')
                s.shutdown(socket.SHUT_WR)
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
                out.append(data)

        t = threading.Thread(target=client)
        t.start()
        with lst.accept(timeout=10) as ch:
            got = list(ch)  # to the client's end of stream
            for msg in got:
                ch.send({"echo": msg})
        t.join(10)
        assert out == [b'{"echo":{"n":1}}\n']

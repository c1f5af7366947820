"""gRPC review (rev-grpc): what a channel says when its client died while nobody was
reading it (both listeners), and when it was closed under a pending request."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tests._threads import BOUND, finished, in_thread

import ipcwire
from ipcwire import aio
from ipcwire.channel import Channel
from ipcwire.errors import ChannelBroken, ChannelClosed

CLIENT = """
import sys, ipcwire
ch = ipcwire.connect(sys.argv[1], timeout=30)
print("connected", flush=True)
sys.stdin.read()
"""


@contextmanager
def client(url: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CLIENT, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(BOUND)
        for f in (proc.stdin, proc.stdout):
            if f is not None:
                f.close()


def _killed(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None and proc.stdout.readline() == "connected\n"
    proc.kill()
    proc.wait(BOUND)


def test_an_asyncio_server_channel_whose_client_was_killed_says_it_went_away() -> None:
    """The client process is killed while the server's application reads nothing: grpc.aio
    cancels the RPC's handler, and the channel's recv() and send() said ChannelBroken 'the
    stream of <url> is over', which names neither the client nor what happened (the blocking
    listener's channel says 'the client of <url> went away')."""

    async def main() -> None:
        async with await aio.listen("grpc://127.0.0.1:0") as lis:
            with client(lis.url) as proc:
                ch = await lis.accept(timeout=BOUND)
                await asyncio.to_thread(_killed, proc)
                async with asyncio.timeout(BOUND):
                    await ch.read_done  # type: ignore[attr-defined]
                for op in (ch.recv(), ch.send(b"x")):
                    try:
                        await op
                    except ChannelBroken as exc:
                        assert f"the client of {lis.url} went away" in str(exc), exc
                        assert exc.endpoint == lis.url
                    else:
                        raise AssertionError("no error")

    asyncio.run(main())


def test_a_blocking_server_channel_whose_client_was_killed_says_it_went_away() -> None:
    """The same on the blocking listener (it said so already)."""
    with ipcwire.listen("grpc://127.0.0.1:0") as lis, client(lis.url) as proc:
        ch = lis.accept(timeout=BOUND)
        _killed(proc)
        assert ch.rpc_over.wait(BOUND)  # type: ignore[attr-defined]
        for op in (ch.recv, lambda: ch.send(b"x")):
            try:
                op()
            except ChannelBroken as exc:
                assert f"the client of {lis.url} went away" in str(exc), exc
                assert exc.endpoint == lis.url
            else:
                raise AssertionError("no error")


def test_close_from_another_thread_ends_a_pending_blocking_request_with_channel_closed() -> None:
    """A thread waits in request() for a reply that does not come; another thread closes the
    channel. The waiting request raised EndOfChannel ('<url> closed the channel': the server
    ended the RPC once it read our close), as if the server had closed; recv() in the same
    place, and the asyncio request(), say ChannelClosed (Closed wins, DESIGN.md)."""
    got = threading.Event()

    def serve(ch: Channel) -> None:
        for msg in ch:
            if msg == b"never":
                got.set()  # and no reply
            else:
                ch.send(msg)

    with ipcwire.listen("grpc://127.0.0.1:0") as lis:
        t = threading.Thread(target=lis.serve, args=(serve,), daemon=True)
        t.start()
        ch = ipcwire.connect(lis.url)
        assert ch.request(b"a", timeout=BOUND) == b"a"
        waiting, box = in_thread(lambda: ch.request(b"never", timeout=BOUND))
        assert got.wait(BOUND)
        ch.close()
        assert finished(waiting)
        assert type(box[0]) is ChannelClosed, box
    t.join(BOUND)

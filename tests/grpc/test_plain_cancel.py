"""A plain gRPC client (grpcio, no ipcwire code) that cancels its stream is no clean close.

grpcio ends the server's request stream the same way whether the client half-closed it or
cancelled it, and reports a cancel apart, a moment later. The ipcwire server channel took the
end as it came: a cancel was ``EndOfChannel`` (a clean close) most of the time, on both APIs,
and ``ChannelBroken`` with other words now and then. Now a cancel is ``ChannelBroken`` saying
the client cancelled (the same words on both APIs), and a half-close stays ``EndOfChannel``.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelBroken, EndOfChannel, IpcwireError
from ipcwire.grpc._grpcio import grpc
from ipcwire.grpc._protocol import STREAM

BOUND = 10.0
ROUNDS = 5  # streams cancelled per test: before the fix each was EndOfChannel about 2 in 3


class PlainClient:
    """Streams on one grpcio channel, in a thread of their own: each sends ``hello``, waits
    for ``go``, then cancels or half-closes."""

    def __init__(self, url: str) -> None:
        self._gch = grpc.insecure_channel(url.removeprefix("grpc://"))

    def stream(self, cancel: bool, go: threading.Event) -> threading.Thread:
        def run() -> None:
            out: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

            def requests() -> Iterator[bytes]:
                while (msg := out.get()) is not None:
                    yield msg

            call = self._gch.stream_stream(STREAM)(requests(), timeout=BOUND)
            out.put(b"hello")
            go.wait(BOUND)
            if cancel:
                call.cancel()
                out.put(None)  # (the request iterator ends)
            else:
                out.put(None)  # half-close
                for _ in call:  # the server's answers, until it ends the stream
                    pass

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    def close(self) -> None:
        self._gch.close()


def check(end: IpcwireError, url: str, cancel: bool) -> None:
    if cancel:
        assert type(end) is ChannelBroken, repr(end)
        assert f"the client of {url} cancelled its stream" in str(end), end
        assert end.endpoint == url
    else:
        assert type(end) is EndOfChannel, repr(end)


@pytest.mark.parametrize("cancel", [True, False], ids=["cancel", "half-close"])
def test_blocking(cancel: bool) -> None:
    with ipcwire.listen("grpc://127.0.0.1:0") as lis:
        client = PlainClient(lis.url)
        try:
            for _ in range(ROUNDS if cancel else 1):
                go = threading.Event()
                t = client.stream(cancel, go)
                with lis.accept(timeout=BOUND) as ch:
                    assert ch.recv(timeout=BOUND) == b"hello"
                    go.set()
                    with pytest.raises((ChannelBroken, EndOfChannel)) as info:
                        ch.recv(timeout=BOUND)
                    check(info.value, lis.url, cancel)
                t.join(BOUND)
        finally:
            client.close()


@pytest.mark.parametrize("cancel", [True, False], ids=["cancel", "half-close"])
@pytest.mark.parametrize("timeout", [None, BOUND], ids=["direct", "reader"])
def test_asyncio(cancel: bool, timeout: float | None) -> None:
    """Both ways the asyncio channel reads: directly (recv() without a timeout) and through
    its reader task."""

    async def main() -> None:
        async with await aio.listen("grpc://127.0.0.1:0") as lis:
            client = PlainClient(lis.url)
            try:
                for _ in range(ROUNDS if cancel else 1):
                    go = threading.Event()
                    t = client.stream(cancel, go)
                    async with await lis.accept(timeout=BOUND) as ch:
                        assert await ch.recv(timeout=timeout) == b"hello"
                        go.set()
                        with pytest.raises((ChannelBroken, EndOfChannel)) as info:
                            async with asyncio.timeout(BOUND):
                                await ch.recv(timeout=timeout)
                        check(info.value, lis.url, cancel)
                    await asyncio.to_thread(t.join, BOUND)
            finally:
                client.close()

    asyncio.run(main())


def test_an_ipcwire_client_close_is_still_a_clean_end() -> None:
    with ipcwire.listen("grpc://127.0.0.1:0") as lis:
        with ipcwire.connect(lis.url, timeout=BOUND) as client:
            client.send(b"hello")
            ch = lis.accept(timeout=BOUND)
        with ch:
            assert ch.recv(timeout=BOUND) == b"hello"
            with pytest.raises(EndOfChannel):
                ch.recv(timeout=BOUND)

    async def main() -> None:
        async with await aio.listen("grpc://127.0.0.1:0") as lis:
            async with await aio.connect(lis.url, timeout=BOUND) as client:
                await client.send(b"hello")
                ch = await lis.accept(timeout=BOUND)
            async with ch:
                assert await ch.recv(timeout=BOUND) == b"hello"
                with pytest.raises(EndOfChannel):
                    await ch.recv(timeout=BOUND)

    asyncio.run(main())

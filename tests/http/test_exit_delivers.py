"""A program that ends with its blocking HTTP channel open (a script whose last line is a
send, a module global) delivers what it sent, and the server learns that the session ended.

Before, the sender thread (a daemon) went with the process: 195 of 200 messages of 64 KiB
arrived and the server's ``recv()`` waited for more (until the session's idle timeout). Now
the channel is closed at exit as ``close()`` closes it (``ipcwire._atexit``): everything is
posted, then the session's DELETE, and the server gets ``EndOfChannel``; as a Unix socket's
kernel delivers everything and then the end.
"""

from __future__ import annotations

from tests._proc import python

import ipcwire
from ipcwire.errors import ChannelBroken, EndOfChannel, IpcwireError

SIZE = 65536
COUNT = 200

UNCLOSED = """
import ipcwire
ch = ipcwire.connect({url!r}, codec="bytes", timeout=10)
for i in range({count}):
    ch.send(i.to_bytes(4, "big") * ({size} // 4))
print("sent", flush=True)
"""


def test_a_program_that_never_closes_its_channel_delivers_what_it_sent() -> None:
    got: list[bytes] = []
    with ipcwire.listen("http://127.0.0.1:0/exit", codec="bytes") as lst:
        proc = python(UNCLOSED.format(url=lst.url, count=COUNT, size=SIZE))
        with lst.accept(timeout=10) as ch:
            while True:
                try:
                    got.append(ch.recv(timeout=10))
                except IpcwireError as exc:
                    end = exc
                    break
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.strip() == "sent"
    assert isinstance(end, EndOfChannel), (len(got), end)
    assert [int.from_bytes(m[:4], "big") for m in got] == list(range(COUNT))


UNCLOSED_AIO = """
import asyncio, logging
from ipcwire import aio
logging.basicConfig(format="%(levelname)s %(message)s")

async def main():
    ch = await aio.connect({url!r}, codec="bytes", timeout=10)
    for i in range({count}):
        await ch.send(i.to_bytes(4, "big") * ({size} // 4))
    if {close}:
        await ch.aclose()
    print("sent", flush=True)

asyncio.run(main())
"""


def _aio_client_ends(close: bool) -> tuple[str, list[int], IpcwireError]:
    got: list[int] = []
    with ipcwire.listen("http://127.0.0.1:0/exit", codec="bytes") as lst:
        proc = python(UNCLOSED_AIO.format(url=lst.url, count=COUNT, size=SIZE, close=close))
        with lst.accept(timeout=10) as ch:
            while True:
                try:
                    got.append(int.from_bytes(ch.recv(timeout=10)[:4], "big"))
                except IpcwireError as exc:
                    end = exc
                    break
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.strip() == "sent"
    return err, got, end


def test_an_asyncio_loop_that_ends_with_its_channel_open_says_what_it_lost() -> None:
    """asyncio.run() returning cancels the sender task and its post before ipcwire can run:
    what was queued is lost. Before, in silence on both sides (the server's recv() waited for
    more); now the client logs a WARNING and its session's DELETE counts what was lost, so
    the server's recv() raises ChannelBroken saying so."""
    err, got, end = _aio_client_ends(close=False)
    assert got == list(range(len(got)))  # in order, no gap, nothing twice
    if len(got) < COUNT:  # (the usual case: the sender was cut off)
        assert "the event loop ended with http://127.0.0.1:" in err, err
        assert "await aclose()" in err, err
        assert isinstance(end, ChannelBroken), end
        assert "could not deliver" in str(end), end
    else:
        assert isinstance(end, EndOfChannel), end


def test_an_asyncio_channel_closed_before_its_loop_ends_delivers_without_a_word() -> None:
    err, got, end = _aio_client_ends(close=True)
    assert "still open" not in err, err
    assert isinstance(end, EndOfChannel), end
    assert got == list(range(COUNT))

"""A client's error says whether the server was killed or closed cleanly, and what to do.

Before, a client receiving when its server was killed (-9) got ChannelBroken "URL closed the
connection or broke HTTP while receiving from it: peer closed connection without sending
complete message body (incomplete chunked read)": neither what happened nor what to do. Now
it says the server went away without closing the channel (killed or died) and to connect
again (reconnect=), as unix:// does; a server that closes cleanly still ends the channel
with EndOfChannel (not yet: see the helper-140 report). Blocking and asyncio.
"""

from __future__ import annotations

import asyncio

import pytest
from tests._proc import child, kill9, wait_line

import ipcwire
from ipcwire import aio

SERVER = """
import sys, threading, ipcwire
with ipcwire.listen("http://127.0.0.1:0/api") as lis:
    print(lis.url, flush=True)
    ch = lis.accept(timeout=30)
    assert ch.recv(timeout=30) == b"hi"
    print("ready", flush=True)
    sys.stdin.readline()  # then the listener closes: a clean end
"""


def _recv(api: str, url: str, until_ready: object) -> BaseException:
    async def a() -> BaseException:
        ch = await aio.connect(url, timeout=5)
        try:
            await ch.send(b"hi")
            await asyncio.to_thread(until_ready)  # type: ignore[arg-type]
            await ch.recv(timeout=10)
        except BaseException as exc:
            return exc
        finally:
            await ch.aclose()
        raise AssertionError("recv returned")

    if api == "asyncio":
        return asyncio.run(a())
    with ipcwire.connect(url, timeout=5) as ch:
        ch.send(b"hi")
        until_ready()  # type: ignore[operator]
        with pytest.raises(ipcwire.IpcwireError) as info:
            ch.recv(timeout=10)
        return info.value


@pytest.mark.parametrize("api", ["blocking", "asyncio"])
def test_killed_server_says_so_and_to_connect_again(api: str) -> None:
    with child(SERVER) as proc:
        url = wait_line(proc)

        def kill() -> None:
            assert wait_line(proc) == "ready"
            kill9(proc)

        exc = _recv(api, url, kill)
    # (the receive in flight breaks, or the next one finds nothing listening)
    assert isinstance(exc, ipcwire.ChannelBroken | ipcwire.ConnectionRefused), repr(exc)
    text = str(exc)
    assert "went away without closing the channel" in text or "nothing listens" in text, text
    assert "connect again" in text and "reconnect=" in text, text

"""A server that closes its listener right after its last reply (the commonest end of a
request-reply server) tells its client: it gets the reply, then EndOfChannel. Before, the
listening socket closed at once and the sessions went with their unfetched messages: a client
whose next request (its recv()) came a moment later found nothing listening
(ConnectionRefused), a reset, or 404 "no channel", as if the server had crashed, and lost the
reply: 7 of 8 runs. Now the shutdown serves on (bounded) until such clients were told.
"""

from __future__ import annotations

import pytest
from tests._proc import child, wait_line

import ipcwire
from ipcwire.errors import ConnectionRefused, EndOfChannel

SERVER = {
    "blocking": """
import ipcwire
with ipcwire.listen("http://127.0.0.1:0") as lst:
    print(lst.url, flush=True)
    ch = lst.accept(timeout=20)
    ch.send(ch.recv(timeout=20) + b" back")
print("closed", flush=True)
""",
    "asyncio": """
import asyncio
from ipcwire import aio
async def main():
    async with await aio.listen("http://127.0.0.1:0") as lst:
        print(lst.url, flush=True)
        ch = await lst.accept(timeout=20)
        await ch.send(await ch.recv(timeout=20) + b" back")
    print("closed", flush=True)
asyncio.run(main())
""",
}


@pytest.mark.parametrize("api", ["blocking", "asyncio"])
def test_the_last_reply_then_the_end(api: str) -> None:
    for _ in range(3):  # (a race before: it failed 7 times in 8)
        with child(SERVER[api]) as proc:
            url = wait_line(proc)
            with ipcwire.connect(url, timeout=10) as ch:
                ch.send(b"hi")
                assert ch.recv(timeout=10) == b"hi back"
                with pytest.raises(EndOfChannel):
                    ch.recv(timeout=10)
            assert wait_line(proc) == "closed"
            with pytest.raises(ConnectionRefused):  # once it is gone, nothing listens
                ipcwire.connect(url, timeout=2)

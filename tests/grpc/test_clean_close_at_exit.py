"""A client that closes its channels cleanly and then exits (or ends its event loop) is a
clean close on the server: the handler's recv() raises EndOfChannel, nothing is logged.

grpcio writes the client's goodbye and half-close from its own threads, and the blocking
close() returns at once: a process that exited right after it dropped the connection with the
goodbye unread, 2 or 3 closes in 10, and the server's handler got ChannelBroken 'the client
... went away' (logged as a WARNING). asyncio's aclose() returned after writing them, and
asyncio.run() then cancelled grpc.aio's tasks and the RPC with them: the same. Blocking and
asyncio clients, against a blocking and an asyncio server, real processes.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests._proc import child, wait_line

BLOCKING_SERVER = """
import os
import ipcwire
from ipcwire.errors import EndOfChannel

def handle(ch):  # (os.write: one write per line, as handlers end in several threads)
    try:
        while True:
            ch.send(ch.recv())
    except EndOfChannel:
        os.write(1, b"clean\\n")
    except Exception as exc:
        os.write(1, f"NOT CLEAN {type(exc).__name__} {exc}\\n".encode())

with ipcwire.listen("grpc://127.0.0.1:0") as lst:
    print(lst.url, flush=True)
    lst.serve(handle)
"""

ASYNCIO_SERVER = """
import asyncio, os
from ipcwire import aio
from ipcwire.errors import EndOfChannel

async def handle(ch):
    try:
        while True:
            await ch.send(await ch.recv())
    except EndOfChannel:
        os.write(1, b"clean\\n")
    except Exception as exc:
        os.write(1, f"NOT CLEAN {type(exc).__name__} {exc}\\n".encode())

async def main():
    async with await aio.listen("grpc://127.0.0.1:0") as lst:
        print(lst.url, flush=True)
        await lst.serve(handle)

asyncio.run(main())
"""

# asyncio channels closed together, then asyncio.run() ends; blocking channels closed
# together, then the process exits.
CLIENT = """
import asyncio, sys
import ipcwire
from ipcwire import aio

URLS = sys.argv[1:]
N = 3

async def one(url):
    ch = await aio.connect(url, timeout=10)
    assert await ch.request(b"hi", timeout=10) == b"hi"
    return ch

async def main():
    chans = await asyncio.gather(*(one(u) for u in URLS for _ in range(N)))
    await asyncio.gather(*(ch.aclose() for ch in chans))

asyncio.run(main())
chans = []
for url in URLS:
    for _ in range(N):
        ch = ipcwire.connect(url, timeout=10)
        assert ch.request(b"hi", timeout=10) == b"hi"
        chans.append(ch)
for ch in chans:
    ch.close()
"""

CLIENTS = 3


def test_clean_closes_then_exit_are_clean_on_the_server() -> None:
    with child(BLOCKING_SERVER) as bsrv, child(ASYNCIO_SERVER) as asrv:
        urls = [wait_line(bsrv), wait_line(asrv)]
        clients = [
            subprocess.Popen(
                [sys.executable, "-c", textwrap.dedent(CLIENT), *urls],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(CLIENTS)
        ]
        for c in clients:
            _, err = c.communicate(timeout=30)
            assert c.returncode == 0, err
        per_server = CLIENTS * 3 * 2  # each client's asyncio and blocking channels
        for srv in (bsrv, asrv):
            ends = [wait_line(srv) for _ in range(per_server)]
            assert ends == ["clean"] * per_server, ends

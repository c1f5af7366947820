"""A server that cannot map the rings a client asks for tells that client why and serves on.

The server runs under a real RLIMIT_AS (its address space as it is, plus 256 MiB); a client
asks for a 512 MiB ring. Before, the mmap's ENOMEM was no ipcwire error, so no refusal was
sent: the client got ``ChannelBroken: the peer closed the connection during the setup`` (no
endpoint, no cause, no hint) and the server logged an INFO line. Now the client gets
``ResourceExhausted`` with the size and the fix, the server a WARNING, and the next client is
served. Both listeners (blocking, asyncio), both clients.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from tests._proc import child, wait_line

import ipcwire
import ipcwire.aio
from ipcwire.errors import ResourceExhausted

LIMIT = """
import resource
vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (256 << 20), resource.RLIM_INFINITY))
"""
SERVERS = {
    "blocking": """
import logging, sys
import ipcwire
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
with ipcwire.listen({url!r}) as lst:
    {limit}
    print("ready", flush=True)
    ch = lst.accept(timeout=20)
    ch.send(ch.recv(timeout=20))
    print("served", flush=True)
""",
    "asyncio": """
import asyncio, logging, sys
import ipcwire.aio
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
async def main():
    async with await ipcwire.aio.listen({url!r}) as lst:
        {limit}
        print("ready", flush=True)
        ch = await lst.accept(timeout=20)
        await ch.send(await ch.recv(timeout=20))
        print("served", flush=True)
asyncio.run(main())
""",
}
BIG = ("512M", "4K")  # to the server, from it


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_rings_the_server_cannot_map_are_refused_with_the_fix(
    server: str, shm_url: Callable[[], str]
) -> None:
    url = shm_url()
    code = SERVERS[server]
    indent = code.split("{limit}")[0].rsplit("\n", 1)[1]
    code = code.format(url=url, limit=LIMIT.strip().replace("\n", "\n" + indent))
    with child(code) as proc:
        assert wait_line(proc) == "ready"
        with pytest.raises(ResourceExhausted) as blocking:
            ipcwire.connect(url, capacity=BIG, timeout=5)

        async def aio_client() -> None:
            await ipcwire.aio.connect(url, capacity=BIG, timeout=5)

        with pytest.raises(ResourceExhausted) as aio:
            asyncio.run(aio_client())
        for info in (blocking, aio):
            text = str(info.value)
            assert text.startswith(f"{url} could not take the connection"), text
            assert "could not map the 536883200 bytes of rings" in text, text
            assert "smaller capacity=" in text, text
        with ipcwire.connect(url, timeout=5) as ch:
            assert ch.request(b"ping", timeout=5) == b"ping"
        assert wait_line(proc) == "served"
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 2, err
    for line in warnings:
        assert url in line and "could not map" in line, line

"""A client program that sends over a channel and ends, with the channel closed or not, and
what the server got: the exit tests of the mechanisms whose client buffers in the process
(grpc, http, ws)."""

from __future__ import annotations

from tests._proc import python

import ipcwire
from ipcwire.errors import IpcwireError

__all__ = ["program_ends"]

_BLOCKING = """
import ipcwire
ch = ipcwire.connect({url!r}, codec="bytes", timeout=10)
for i in range({count}):
    ch.send(i.to_bytes(4, "big") * ({size} // 4))
if {close}:
    ch.close()
print("sent", flush=True)
"""

_AIO = """
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


def program_ends(
    url: str, *, count: int, size: int, aio: bool = False, close: bool = False
) -> tuple[str, list[int], IpcwireError]:
    """Listen at ``url``; a child connects, sends ``count`` messages of ``size`` bytes (each
    starting with its index), closes the channel or not, and ends (its asyncio loop with it,
    ``aio``). Returns what the child wrote to stderr (its log: WARNINGs), the indexes the
    server received, in order, and the error that ended the server's channel."""
    got: list[int] = []
    template = _AIO if aio else _BLOCKING
    with ipcwire.listen(url, codec="bytes") as lst:
        proc = python(template.format(url=lst.url, count=count, size=size, close=close))
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

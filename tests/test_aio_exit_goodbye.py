"""An asyncio channel left open by a program whose loop no longer runs at exit is told the
end as a blocking one is: a clean goodbye when the program ends normally, one naming the
exception when an uncaught exception ends it. The loop may have been closed by asyncio.run()
or stopped and never closed (ipykernel's loop, a run_until_complete script: serve()'s
handlers never ran their async with exits). Before, the process's end closed the sockets
without a goodbye, and each client was told its server had crashed (helper-139)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests._proc import child, wait_line

import ipcwire
from ipcwire.errors import ChannelBroken, EndOfChannel

SERVER = """
import asyncio, sys
from ipcwire import aio
async def setup():
    lst = await aio.listen({url!r})
    print(lst.url, flush=True)
    ch = await lst.accept(timeout=20)
    print("got", await ch.recv(timeout=20), flush=True)
    return lst, ch
if {loop!r} == "closed":
    keep = asyncio.run(setup())
else:
    keep = asyncio.new_event_loop().run_until_complete(setup())  # stopped, never closed
{ending}
"""


@pytest.mark.parametrize("loop", ["stopped", "closed"])
@pytest.mark.parametrize("ending", ["sys.exit(0)", "raise RuntimeError('secret')"])
def test_the_end_is_told_at_exit(loop: str, ending: str, tmp_path: Path) -> None:
    src = SERVER.format(url=f"unix://{tmp_path}/e.sock", loop=loop, ending=ending)
    with child(src) as proc:
        url = wait_line(proc)
        with ipcwire.connect(url, timeout=10) as ch:
            ch.send(b"hi")
            assert wait_line(proc) == "got b'hi'"
            if ending.startswith("sys.exit"):
                with pytest.raises(EndOfChannel):
                    ch.recv(timeout=10)
            else:
                with pytest.raises(ChannelBroken, match="RuntimeError uncaught") as err:
                    ch.recv(timeout=10)
                assert "secret" not in str(err.value)

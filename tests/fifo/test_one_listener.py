"""A FIFO has one reader: a second listener is refused, naming the first (both APIs)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests._proc import child, kill9, wait_line

import ipcwire
from ipcwire import aio
from ipcwire.errors import AddressInUse

LISTENER = """
import ipcwire, sys
lst = ipcwire.listen({url!r}, framing="ndjson")
print("ready", flush=True)
sys.stdin.read()
"""


def test_a_second_listener_is_refused_naming_the_live_one_with_both_apis(
    tmp_path: Path,
) -> None:
    # Both listens succeeded, and the messages of one writer were split between the two
    # readers (744 and 256 of 1000): the second bind silently took part of the endpoint.
    path = tmp_path / "one.fifo"
    url = f"fifo://{path}"
    with child(LISTENER.format(url=url)) as first:
        assert wait_line(first) == "ready"
        with pytest.raises(AddressInUse, match=f"in pid {first.pid} ") as blocking:
            ipcwire.listen(url, framing="ndjson")
        assert blocking.value.pid == first.pid
        assert "a FIFO has one reader" in str(blocking.value)
        assert "one.fifo" in str(blocking.value)  # its command line

        async def second() -> None:
            await aio.listen(url, framing="ndjson")

        with pytest.raises(AddressInUse, match=f"in pid {first.pid} ") as asyncio_api:
            asyncio.run(second())
        assert asyncio_api.value.pid == first.pid
        assert path.exists()  # the refused listeners left the first one's FIFO alone
        # the same FIFO as the reply FIFO of another listener: refused too
        with pytest.raises(AddressInUse, match=f"in pid {first.pid} "):
            ipcwire.listen(f"fifo://{tmp_path}/in.fifo?reply={path}")
        assert not (tmp_path / "in.fifo").exists()
        assert not (tmp_path / "in.fifo.lock").exists()
        kill9(first)
    # what a listener killed -9 left behind (the FIFO, its lock file) is taken over
    assert path.exists()
    with (
        ipcwire.listen(url, framing="ndjson") as listener,
        listener.accept() as ch,
        ipcwire.connect(url, framing="ndjson", timeout=5) as writer,
    ):
        writer.send({"n": 1})
        assert ch.recv(timeout=5) == {"n": 1}
        with pytest.raises(AddressInUse, match=r"a listener in pid \d+"):
            ipcwire.listen(url)  # in the same process too
    assert not Path(f"{path}.lock").exists()  # removed with the listener that closed
    with ipcwire.listen(url):  # and the FIFO is free again
        pass

"""A consumer whose spool's .order lock another process keeps (stopped there by SIGSTOP or a
debugger, or any program that can open the spool): its recv timeout says that a message is
waiting and who keeps the lock, not that the spool is empty; both APIs in the same words."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests._proc import child, wait_line

import ipcwire
from ipcwire import aio
from ipcwire.errors import Timeout

HOLDER = """
import fcntl, os, sys
fd = os.open({path!r}, os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


def _check(exc: Timeout, url: str, pid: int) -> None:
    text = str(exc)
    assert url in text and "no message in" not in text, text
    assert "1 message waits in new/" in text, text
    assert f"pid {pid} (" in text and ".order" in text, text
    assert "resume or end that process" in text, text


def test_recv_timeout_names_the_order_holder_on_both_apis(spool_dir: Path) -> None:
    q = spool_dir / "q"
    url = f"spool://{q}"
    with ipcwire.connect(url, fsync=False) as p:
        p.send(b"waiting")
    with child(HOLDER.format(path=str(q / ".order"))) as holder:
        assert wait_line(holder) == "held"
        with ipcwire.connect(url) as c, pytest.raises(Timeout) as blocking:
            c.recv(timeout=0.2)
        _check(blocking.value, url, holder.pid)

        async def main() -> None:
            async with await aio.connect(url) as c:
                await c.recv(timeout=0.2)

        with pytest.raises(Timeout) as asyncio_:
            asyncio.run(main())
        _check(asyncio_.value, url, holder.pid)
    with ipcwire.connect(url) as c:  # once the holder is gone, the message comes
        assert c.recv(timeout=5) == b"waiting"

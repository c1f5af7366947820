"""A blocking connect() to an asyncio listener of this very process (whose loop that connect
blocks) says so, and what to do: before, it timed out with "took the connection but did not
complete the ipcwire handshake ...: is it an ipcwire endpoint, with the same framing= ...",
sending the user to check a server that was fine. (A silent socket that is not an asyncio
listener, in this process too, keeps that message: tests/test_silent_server.py.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import Timeout


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_blocking_connect_to_own_loop(kind: str, tmp_path: Path) -> None:
    where = f"unix://{tmp_path}/self.sock" if kind == "unix" else "tcp://127.0.0.1:0"

    async def main() -> tuple[str, str]:
        async with await aio.listen(where) as listener:
            with pytest.raises(Timeout) as info:
                ipcwire.connect(listener.url, timeout=0.3)
        return listener.url, str(info.value)

    url, text = asyncio.run(main())
    assert text.startswith(
        f"{url} took the connection but did not complete the ipcwire handshake within "
    ), text
    assert text.endswith(
        "the server is in this process: its event loop cannot run while this blocking "
        "connect() waits; use ipcwire.aio.connect() in the loop, or run the server in another "
        "thread/process"
    ), text

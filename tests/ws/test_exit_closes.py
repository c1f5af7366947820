"""A program that ends with its blocking WebSocket client open (a module global, a script
whose last line is a send) ends the connection with the closing handshake.

Before, the server got every message and then ``ChannelBroken`` (1006, "lost without a
closing handshake"), as if the client had crashed; a Unix socket's server sees a clean end.
Now the channel is closed at exit as ``close()`` closes it (``ipcwire._atexit``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests._proc import python

import ipcwire
from ipcwire.errors import EndOfChannel, IpcwireError

COUNT = 50

UNCLOSED = """
import ipcwire
ch = ipcwire.connect({url!r}, codec="bytes", timeout=10)
for i in range({count}):
    ch.send(i.to_bytes(4, "big") * 1024)
print("sent", flush=True)
"""


@pytest.mark.parametrize("scheme", ["ws", "ws+unix"])
def test_a_program_that_never_closes_its_client_ends_cleanly(scheme: str, tmp_path: Path) -> None:
    url = "ws://127.0.0.1:0/exit" if scheme == "ws" else f"ws+unix://{tmp_path}/exit.sock"
    got: list[int] = []
    with ipcwire.listen(url, codec="bytes") as lst:
        proc = python(UNCLOSED.format(url=lst.url, count=COUNT))
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
    assert got == list(range(COUNT))
    assert isinstance(end, EndOfChannel), end

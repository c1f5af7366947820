"""A program that ends with its blocking WebSocket client open (a module global, a script
whose last line is a send) ends the connection with the closing handshake.

Before, the server got every message and then ``ChannelBroken`` (1006, "lost without a
closing handshake"), as if the client had crashed; a Unix socket's server sees a clean end.
Now the channel is closed at exit as ``close()`` closes it (``ipcwire._atexit``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests._exit import program_ends

from ipcwire.errors import EndOfChannel

COUNT = 50


@pytest.mark.parametrize("scheme", ["ws", "ws+unix"])
def test_a_program_that_never_closes_its_client_ends_cleanly(scheme: str, tmp_path: Path) -> None:
    url = "ws://127.0.0.1:0/exit" if scheme == "ws" else f"ws+unix://{tmp_path}/exit.sock"
    _, got, end = program_ends(url, count=COUNT, size=4096)
    assert got == list(range(COUNT))
    assert isinstance(end, EndOfChannel), end

"""One client's handshake failing in a way nobody foresaw drops that client only.

A hello nested deeper than the recursion limit ended the blocking listener's acceptor thread
(0c5fd4e: RecursionError, now a refusal): no client was ever accepted again. The next such
surprise must not do that either. The fault is injected (a handshake step that raises for one
client, as an unforeseen bug would); the clients, sockets and listener are real.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import ipcwire
from ipcwire._core.handshake import ServerHandshake
from ipcwire.errors import IpcwireError


def test_the_listener_goes_on_after_a_handshake_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = ServerHandshake.receive
    fail = threading.Event()
    fail.set()  # the first client's hello raises

    def receive(self: ServerHandshake, payload: Any) -> Any:
        if fail.is_set():
            fail.clear()
            raise ValueError("a bug nobody foresaw")
        return real(self, payload)

    monkeypatch.setattr(ServerHandshake, "receive", receive)
    with ipcwire.listen(f"unix://{tmp_path}/s.sock") as lst:
        with pytest.raises(IpcwireError):  # dropped: the connection ends in its handshake
            ipcwire.connect(lst.url, timeout=5)
        box: list[Any] = []
        t = threading.Thread(target=lambda: box.append(lst.accept(timeout=10)))
        t.start()
        with ipcwire.connect(lst.url, timeout=10) as ch:  # timed out before: no acceptor
            ch.send(b"after")
            t.join(10)
            with box[0] as server:
                assert server.recv(timeout=10) == b"after"
    assert any("handshake failed unexpectedly" in r.getMessage() for r in caplog.records)

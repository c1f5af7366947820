"""A blocking serve() that cannot start a thread for a client (a process or thread limit:
ulimit -u, a container's pids.max) drops that client with a typed error it can read and goes
on serving. It raised "RuntimeError: cannot join thread before it is started" (hiding "can't
start new thread"), dropped every client it was serving, and left the listener open to new
clients whose handshakes then went unanswered (helper-106's chaos walkthrough, under a real
pids cgroup). Here the limit is made by refusing the start of one handler thread: root is not
bound by RLIMIT_NPROC, and a pids cgroup is not there on every machine.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

import ipcwire
from ipcwire.errors import ChannelBroken


def test_a_client_without_a_thread_is_told_and_the_others_are_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = threading.Thread.start
    starts = [0]

    def start(self: threading.Thread) -> None:
        if self.name.startswith("ipcwire unix://"):  # serve()'s handler threads
            starts[0] += 1
            if starts[0] == 2:
                raise RuntimeError("can't start new thread")
        real(self)

    def echo(ch: ipcwire.Channel) -> None:
        for m in ch:
            ch.send(m)

    with ipcwire.listen(f"unix://{tmp_path}/s.sock") as lst:
        monkeypatch.setattr(threading.Thread, "start", start)
        server = threading.Thread(target=lst.serve, args=(echo,), daemon=True)
        real(server)
        with ipcwire.connect(lst.url, timeout=10) as first:
            assert first.request(b"1", timeout=10) == b"1"
            with ipcwire.connect(lst.url, timeout=10) as second:  # its thread cannot start
                with pytest.raises(ChannelBroken) as err:  # the server's end, with why
                    second.recv(timeout=10)
                assert "ResourceExhausted" in str(err.value), err.value
            with ipcwire.connect(lst.url, timeout=10) as third:  # threads start again
                assert third.request(b"3", timeout=10) == b"3"
            assert first.request(b"4", timeout=10) == b"4"  # the first was never dropped
    server.join(10)
    assert not server.is_alive()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("cannot start a thread for a client" in w for w in warnings), warnings

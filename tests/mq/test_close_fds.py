"""close() gives back every descriptor a channel holds, even while the channel object is
still referenced (a server keeping its sessions in a dict, a traceback holding one)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import ipcwire


def _fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def test_closed_channels_hold_no_descriptors(mq_url: Callable[..., str]) -> None:
    url = mq_url()
    with ipcwire.listen(url) as listener:
        before = _fds()
        kept: list[Any] = []
        for _ in range(3):
            box: list[Any] = []
            t = threading.Thread(target=lambda b=box: b.append(listener.accept(timeout=10)))
            t.start()
            client = ipcwire.connect(url, timeout=10)
            t.join()
            client.send(b"x")
            assert box[0].recv(timeout=10) == b"x"
            client.close()
            box[0].close()
            kept += [client, box[0]]
        left = _fds() - before
        assert not left, [os.readlink(f"/proc/self/fd/{fd}") for fd in left]

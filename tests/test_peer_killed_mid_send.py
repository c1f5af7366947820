"""A peer killed while a large send is part-way through: the send says the peer went away.
It said "an earlier send to unix:///x.sock was interrupted part-way through a message by an
error; the stream is out of step", every time (helper-106's chaos walkthrough): it was not an
earlier send, nothing interrupted it, and the peer's death went unsaid (the native sender's
own write met EPIPE after part of the message, and was taken for another thread's torn send).
"""

from __future__ import annotations

import fcntl
import os
import signal
import struct
import termios
import threading
import time
from pathlib import Path

import pytest
from tests._proc import python, wait_line

import ipcwire
from ipcwire.errors import ChannelBroken

SERVER = """
import sys, ipcwire
with ipcwire.listen({url!r}) as lst:
    print("ready", flush=True)
    ch = lst.accept(timeout=20)
    print("accepted", flush=True)
    sys.stdin.readline()  # never reads the channel: the client's send fills the buffers
"""


def _queued(fd: int) -> int:
    """Bytes in the socket's send queue (SIOCOUTQ, alias TIOCOUTQ)."""
    (queued,) = struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0"))
    return int(queued)


def test_a_send_cut_by_the_peers_death_says_the_peer_went_away(tmp_path: Path) -> None:
    url = f"unix://{tmp_path}/k.sock"
    server = python(SERVER.format(url=url))
    try:
        assert wait_line(server) == "ready"
        ch = ipcwire.connect(url, timeout=10)
        assert wait_line(server) == "accepted"
        errors: list[BaseException] = []

        def send() -> None:
            try:
                ch.send(b"x" * (16 << 20))  # far more than the buffers hold
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=send, daemon=True)
        t.start()
        fd = ch._stream.fileno()  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10
        while _queued(fd) == 0 and time.monotonic() < deadline:  # nothing to wait on
            time.sleep(0.005)
        assert _queued(fd) > 0  # part of the message is out: the send is mid-message
        os.kill(server.pid, signal.SIGKILL)
        t.join(10)
        assert not t.is_alive()
        [err] = errors
        assert isinstance(err, ChannelBroken), err
        text = str(err)
        assert "earlier send" not in text and "interrupted" not in text, text
        assert "the peer" in text, text
        with pytest.raises(ChannelBroken):  # and the channel sends no more
            ch.send(b"y")
        ch.close()
    finally:
        if server.poll() is None:
            server.kill()
        server.communicate()

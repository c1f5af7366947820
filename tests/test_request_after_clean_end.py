"""A send that meets the end of a peer that closed the channel cleanly says so, as a send after
receiving its end does ("it closed the channel"), not "broke ... broken pipe", the words for a
peer that was killed. A request() to a server that finished, the commonest client pattern,
could not tell it from a crashed one (helper-126): on a Unix socket the request's send meets
EPIPE before its receive would read the goodbye. The goodbye is not consumed: the next recv()
raises EndOfChannel.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests._proc import child, kill9, wait_line

import ipcwire
from ipcwire.errors import ChannelBroken, EndOfChannel

SERVER = """
import ipcwire, threading
with ipcwire.listen({url!r}) as lst:
    print(lst.url, flush=True)
    ch = lst.accept(timeout=20)
    ch.recv(timeout=20)
    if {close}:
        ch.close()
    print("done", flush=True)
    threading.Event().wait()
"""


@pytest.mark.parametrize("end", ["closed", "killed"])
def test_a_request_to_a_peer_that_ended(end: str, tmp_path: Path) -> None:
    src = SERVER.format(url=f"unix://{tmp_path}/r.sock", close=end == "closed")
    with child(src) as proc:
        url = wait_line(proc)
        with ipcwire.connect(url, timeout=10) as ch:
            ch.send(b"hello")
            assert wait_line(proc) == "done"
            if end == "killed":
                kill9(proc)
            with pytest.raises(ChannelBroken) as err:
                for _ in range(3):  # (the first write may still find room after a kill)
                    ch.request(b"ping", timeout=10)
            if end == "closed":
                assert str(err.value).startswith(f"cannot send to {url}: it closed the channel")
                with pytest.raises(EndOfChannel):
                    ch.recv(timeout=10)
            else:
                assert "it closed the channel" not in str(err.value), err.value

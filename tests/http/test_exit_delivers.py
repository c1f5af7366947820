"""A program that ends with its blocking HTTP channel open (a script whose last line is a
send, a module global) delivers what it sent, and the server learns that the session ended.

Before, the sender thread (a daemon) went with the process: 195 of 200 messages of 64 KiB
arrived and the server's ``recv()`` waited for more (until the session's idle timeout). Now
the channel is closed at exit as ``close()`` closes it (``ipcwire._atexit``): everything is
posted, then the session's DELETE, and the server gets ``EndOfChannel``; as a Unix socket's
kernel delivers everything and then the end.
"""

from __future__ import annotations

from tests._proc import python

import ipcwire
from ipcwire.errors import EndOfChannel, IpcwireError

SIZE = 65536
COUNT = 200

UNCLOSED = """
import ipcwire
ch = ipcwire.connect({url!r}, codec="bytes", timeout=10)
for i in range({count}):
    ch.send(i.to_bytes(4, "big") * ({size} // 4))
print("sent", flush=True)
"""


def test_a_program_that_never_closes_its_channel_delivers_what_it_sent() -> None:
    got: list[bytes] = []
    with ipcwire.listen("http://127.0.0.1:0/exit", codec="bytes") as lst:
        proc = python(UNCLOSED.format(url=lst.url, count=COUNT, size=SIZE))
        with lst.accept(timeout=10) as ch:
            while True:
                try:
                    got.append(ch.recv(timeout=10))
                except IpcwireError as exc:
                    end = exc
                    break
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.strip() == "sent"
    assert isinstance(end, EndOfChannel), (len(got), end)
    assert [int.from_bytes(m[:4], "big") for m in got] == list(range(COUNT))

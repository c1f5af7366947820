"""A blocking ``send(timeout=)`` behind a network partition: what websocket.md says.

helper-155 saw ``send("x" * 65536, timeout=3)`` wait its whole 3 s and return, five times in a
row, and the sixth raise ``Timeout``, while websocket.md said a send whose timeout passes
raises ``Timeout`` and sends nothing. The page now says what happens: a message that fits in
the 256 KiB queue is handed over (the send writes the queue itself up to its timeout, then
returns; the message goes, in order, when the link carries data again); a send that finds
the queue full waits for room and raises ``Timeout``, nothing sent. This test holds the
driver to that: every message whose send returned arrives, whole and in order, after the
partition heals; the one that timed out never does; the channel stays usable.
"""

from __future__ import annotations

import threading
import time

from tests._proc import wait_until
from tests.ws._partition import Partition

import ipcwire
from ipcwire.errors import IpcwireError, Timeout

SIZE = 65536
TIMEOUT = 0.3


def test_sends_behind_a_partition_are_handed_over_or_send_nothing() -> None:
    got: list[bytes] = []
    with ipcwire.listen("ws://127.0.0.1:0/x", codec="bytes") as lst:
        port = int(lst.url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])

        def serve() -> None:
            with lst.accept(timeout=10) as ch:
                while True:
                    try:
                        got.append(ch.recv(timeout=20))
                    except IpcwireError:
                        return

        server = threading.Thread(target=serve)
        server.start()
        with Partition("127.0.0.1", port) as part:
            ch = ipcwire.connect(f"ws://127.0.0.1:{part.port}/x", codec="bytes", timeout=5)
            ch.send(b"first", timeout=5)
            part.part()
            sent: list[int] = []
            timed_out = None
            for i in range(2000):
                began = time.monotonic()
                try:
                    ch.send(i.to_bytes(4, "big") * (SIZE // 4), timeout=TIMEOUT)
                except Timeout as exc:
                    timed_out = (i, exc, time.monotonic() - began)
                    break
                sent.append(i)
            assert timed_out is not None, "no send timed out behind the partition"
            lost, err, took = timed_out
            assert "Nothing of this message was sent" in str(err)
            assert "the network is not carrying the data" in str(err)
            assert took < TIMEOUT + 1.0
            part.heal()
            ch.send(b"after", timeout=10)  # the channel is usable
            assert wait_until(lambda: got and got[-1] == b"after")
            part.close()  # (all arrived: the link goes, the closing handshake need not wait)
            ch.close()
            server.join(20)
            assert not server.is_alive()
    # everything send() returned for arrived, in order and whole; the timed-out one did not
    assert got[0] == b"first" and got[-1] == b"after"
    numbers = [int.from_bytes(m[:4], "big") for m in got[1:-1]]
    assert numbers == sent
    assert all(m == m[:4] * (SIZE // 4) for m in got[1:-1])
    assert lost not in numbers

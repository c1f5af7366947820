"""A process that closes a gRPC channel and exits delivers what it sent, as long as the server
keeps reading; what a server that stopped reading left unread is not lost in silence.

Before, the exit waited at most 2 s in all (EXIT_WAIT) for the servers of closed channels:
on a slow link 137 messages were sent, close() took 0.0 s, the process exited 0, and the
server got 76, with nothing said. tcp and ws, whose kernel delivers after the process has
gone, lost nothing. Now the exit waits while the writing moves (it gives up once nothing was
written for 2 s, or after 60 s in all), and what it cuts off is a WARNING naming the channel
and how many messages and bytes were never written.
"""

from __future__ import annotations

import threading
import time

from tests._proc import python

import ipcwire
from ipcwire.errors import EndOfChannel, IpcwireError

SIZE = 65536

CLIENT = """
import time, ipcwire
from ipcwire.errors import Timeout
ch = ipcwire.connect({url!r}, codec="bytes", timeout=10)
sent = 0
for i in range({count}):
    try:
        ch.send(i.to_bytes(4, "big") * ({size} // 4), timeout={send_timeout})
    except Timeout:
        break
    sent += 1
began = time.monotonic()
ch.close()
print(sent, round(time.monotonic() - began, 2), flush=True)
"""


def test_exit_waits_while_a_slow_server_reads_everything() -> None:
    got: list[bytes] = []
    end: list[IpcwireError] = []

    def serve(lst: ipcwire.Listener) -> None:
        with lst.accept(timeout=10) as ch:
            while True:
                try:
                    got.append(ch.recv(timeout=10))
                except IpcwireError as exc:
                    end.append(exc)
                    return
                threading.Event().wait(0.02)  # a slow reader: 50 messages (3 MiB) a second

    with ipcwire.listen("grpc://127.0.0.1:0", codec="bytes") as lst:
        server = threading.Thread(target=serve, args=(lst,))
        server.start()
        proc = python(CLIENT.format(url=lst.url, count=300, size=SIZE, send_timeout=10))
        out, err = proc.communicate(timeout=60)
        server.join(30)
    assert proc.returncode == 0, err
    sent, close_took = out.split()
    assert int(sent) == 300
    assert float(close_took) < 1  # close() itself returns at once, as before
    assert "not delivered" not in err
    assert isinstance(end[0], EndOfChannel), (len(got), end)
    assert [int.from_bytes(m[:4], "big") for m in got] == list(range(300))


def test_exit_cut_off_by_a_server_that_does_not_read_warns() -> None:
    """The server takes nothing: the exit gives up 2 s after the writing stopped, and says
    what it did not deliver."""
    with ipcwire.listen("grpc://127.0.0.1:0", codec="bytes") as lst:
        accepted = threading.Event()
        box: list[ipcwire.Channel] = []

        def accept() -> None:
            box.append(lst.accept(timeout=10))
            accepted.set()

        acceptor = threading.Thread(target=accept)
        acceptor.start()
        began = time.monotonic()
        proc = python(CLIENT.format(url=lst.url, count=100000, size=SIZE, send_timeout=0.5))
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - began
        acceptor.join(10)
        for ch in box:
            ch.close()
    assert proc.returncode == 0, err
    assert int(out.split()[0]) > 0
    assert f"exiting with {lst.url} not delivered: " in err, err
    assert "messages (" in err and "were never written" in err
    assert took < 15, took

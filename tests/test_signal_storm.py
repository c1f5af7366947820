"""A process that takes signals often still gets its timeouts.

The stream sockets (unix, tcp) and the blocking udp driver waited with SO_RCVTIMEO and
SO_SNDTIMEO. The kernel ends such a wait with EINTR whenever a Python signal handler is to
run, and Python retries the call with the whole timeout again (PEP 475): a process taking a
signal more often than its timeout (a profiler's timer, ``signal:`` channels, SIGCHLD from
many children) never timed out. A probe (SIGUSR1 every 2 ms, ``recv(timeout=1)``) hung on
unix, tcp and udp, and returned after 1 s on every other mechanism. Timed waits are poll()'s
now, whose retries count down. Each case runs in a child with its own signal storm; a hang
is the child's timeout.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests._proc import run_python

CHILD = """
import os, signal, threading, time, ipcwire
URL, SEND = {url!r}, {send!r}
taken = [0]
signal.signal(signal.SIGUSR1, lambda *a: taken.__setitem__(0, taken[0] + 1))
lst = ipcwire.listen(URL)
box = []
t = threading.Thread(target=lambda: box.append(lst.accept(timeout=10)))
t.start()
client = ipcwire.connect(lst.url, timeout=10)
if URL.startswith("udp"):
    client.send(b"hello")  # (a udp listener's peer is known by its first datagram)
t.join()
server = box[0]
if URL.startswith("udp"):
    server.recv(timeout=10)
stop = threading.Event()


def storm():
    while not stop.is_set():
        os.kill(os.getpid(), signal.SIGUSR1)
        stop.wait(0.002)


threading.Thread(target=storm, daemon=True).start()
start = time.monotonic()
try:
    if SEND:  # nobody reads the server side: the client's send waits for room
        while True:
            client.send(b"x" * 1_000_000, timeout=0.5)
    else:
        server.recv(timeout=0.5)
except ipcwire.Timeout:
    print("Timeout", round(time.monotonic() - start, 1), taken[0] > 50)
stop.set()
client.close(); server.close(); lst.close()
"""


@pytest.mark.parametrize(
    ("kind", "send"),
    [("unix", False), ("tcp", False), ("udp", False), ("unix", True), ("tcp", True)],
    ids=["unix-recv", "tcp-recv", "udp-recv", "unix-send", "tcp-send"],
)
def test_a_timeout_ends_while_signals_keep_coming(kind: str, send: bool, tmp_path: Path) -> None:
    url = {"unix": f"unix://{tmp_path}/s.sock", "tcp": "tcp://127.0.0.1:0"}.get(
        kind, "udp://127.0.0.1:0"
    )
    out = run_python(CHILD.format(url=url, send=send), timeout=60)  # before: it never ended
    word, seconds, stormed = out.split()
    assert word == "Timeout" and stormed == "True", out
    assert float(seconds) < 10, out

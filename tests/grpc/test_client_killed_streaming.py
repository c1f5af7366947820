"""A client killed while it streams large messages is a client that went away, on the server.

grpcio's request iterator raises a bare ``RpcError`` (no status code) when the client's
connection dies in the middle of a message; the listener turned it into ``ChannelBroken:
grpc://... answered None: None`` (no word of the client, no hint), in about half the runs
(the others saw the end of the stream or CANCELLED, and said "the client of ... went away").
The client is a real process, killed with -9 while it sends 3 MiB messages.
"""

from __future__ import annotations

import os
import signal
import time

from tests._proc import python

import ipcwire
from ipcwire.errors import ChannelBroken

CLIENT = """
import sys, ipcwire
ch = ipcwire.connect(sys.argv[1], timeout=5)
while True:
    ch.send(b"x" * (3 << 20))
"""
ROUNDS = 6  # before, about half of them ended with "None: None"
STREAMING = 0.2  # seconds the server reads before the client is killed (as the walkthrough)


def test_a_client_killed_mid_message_went_away() -> None:
    ends: list[BaseException] = []
    with ipcwire.listen("grpc://127.0.0.1:0") as lst:
        for _ in range(ROUNDS):
            proc = python(CLIENT.replace("sys.argv[1]", repr(lst.url)))
            try:
                with lst.accept(timeout=10) as ch:
                    ch.recv()  # the client streams now (read in this thread, as a handler does)
                    kill_at = time.monotonic() + STREAMING
                    try:
                        while True:
                            ch.recv()
                            if kill_at and time.monotonic() >= kill_at:
                                os.kill(proc.pid, signal.SIGKILL)  # most likely mid-message
                                kill_at = 0.0
                    except ChannelBroken as exc:
                        ends.append(exc)
            finally:
                proc.kill()
                proc.communicate(timeout=20)
    for end in ends:
        assert f"the client of {lst.url} went away" in str(end), repr(end)
    assert len(ends) == ROUNDS

"""POSIX message queues: a server and a client process, with priorities and a large message.

Run: python examples/mq_jobs.py
"""

from __future__ import annotations

import os
import subprocess
import sys

import ipcwire
from ipcwire.mq.blocking import MessageQueue, MqChannel

if len(sys.argv) > 1:  # the client process
    with ipcwire.connect(sys.argv[1], codec="json", timeout=5) as ch:
        assert isinstance(ch, MqChannel)  # for the type checker: priorities are mq's own
        ch.send({"job": "resize", "n": 1})
        ch.send({"job": "fix the outage", "n": 2}, priority=9)  # overtakes if still queued
        ch.send({"job": "archive", "n": 3, "blob": "x" * 100_000})  # > 8 KiB: sent in pieces
        for _ in range(3):
            print("client got:", ch.recv(timeout=5))
    sys.exit(0)

url = f"mq:///ipcwire-example-{os.getpid()}"
with ipcwire.listen(url, codec="json") as server:  # the queue /ipcwire-example-PID, 0600
    client = subprocess.Popen([sys.executable, __file__, url])
    with server.accept(timeout=10) as ch:
        assert ch.peer is not None
        assert isinstance(ch, MqChannel)
        print("client pid:", ch.peer.pid == client.pid)
        for _ in range(3):
            job, priority = ch.recv_with_priority(timeout=5)
            print(f"server got job {job['n']} ({job['job']}) at priority {priority}")
            ch.send({"done": job["n"]})
    client.wait(10)
try:
    MessageQueue.open(url[len("mq://") :]).close()
    print("the queue is still there")
except ipcwire.ConnectionRefused:
    print("queue removed on close; the channel's own queues were unlinked as soon as it opened")

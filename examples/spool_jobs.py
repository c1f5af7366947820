"""A durable file spool: a worker killed mid-job (kill -9) loses nothing.

Run: python examples/spool_jobs.py
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile

import ipcwire
from ipcwire.spool.blocking import SpoolChannel

workdir = tempfile.mkdtemp()
url = f"spool://{workdir}/jobs"

with ipcwire.connect(url, codec="json") as producer:
    producer.send_many([{"job": n} for n in range(1, 4)])  # on disk (fsync'd) now
print("queued 3 jobs in", url)

# A worker process takes job 1 and dies before finishing it.
worker = subprocess.Popen(
    [
        sys.executable,
        "-c",
        "import ipcwire, sys\n"
        f"ch = ipcwire.connect({url!r}, codec='json')\n"
        "print(ch.recv(timeout=5), flush=True)\n"
        "sys.stdin.read()\n",
    ],
    stdin=subprocess.PIPE,
    stdout=subprocess.PIPE,
    text=True,
)
assert worker.stdout is not None
print("worker claimed:", worker.stdout.readline().strip())
os.kill(worker.pid, signal.SIGKILL)
worker.communicate()
print("worker killed with SIGKILL")

# Another worker gets every job, including the one the dead worker held.
with ipcwire.connect(url, codec="json", reap_interval=0.1) as ch:
    assert isinstance(ch, SpoolChannel)  # claim() and store are the spool's own
    jobs: list[str] = []
    while len(jobs) < 3:
        delivery = ch.claim(timeout=5)
        jobs.append(delivery.message["job"])
        print(f"job {delivery.message['job']} (delivery attempt {delivery.attempt})")
        delivery.ack()
    print("all done:", sorted(jobs), "left:", ch.store.counts())
shutil.rmtree(workdir)

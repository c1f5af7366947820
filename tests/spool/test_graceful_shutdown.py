"""A consumer stopped by SIGTERM through ``graceful_shutdown`` gives back the message it was
processing; it does not acknowledge it.

Before, the shutdown closed the spool channel with its plain ``close()``, which acknowledges
what ``recv`` returned (the convenience of ``for job in q``: a message is done once the next is
asked for). The job in progress was removed from the spool and lost, on both APIs, while a
consumer killed by SIGTERM's default action, or by kill -9, left it to be delivered again
(found by a newcomer walkthrough).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ipcwire
from ipcwire.spool.blocking import SpoolChannel

SRC = str(Path(__file__).resolve().parents[2] / "src")

BLOCKING = """
import sys, threading, ipcwire
q = ipcwire.connect(sys.argv[1], codec="json")
ipcwire.graceful_shutdown(q)
for job in q:
    print("got", job["n"], flush=True)
    threading.Event().wait()  # processing: until the test's SIGTERM
    print("processed", job["n"], flush=True)
"""

ASYNCIO = """
import asyncio, sys
from ipcwire import aio

async def main():
    q = await aio.connect(sys.argv[1], codec="json")
    aio.graceful_shutdown(q)
    async for job in q:
        print("got", job["n"], flush=True)
        await asyncio.Event().wait()  # processing: until the test's SIGTERM
        print("processed", job["n"], flush=True)

asyncio.run(main())
"""

LEFT_AFTER_CLOSE = """
import sys, ipcwire
with ipcwire.connect(sys.argv[1], codec="json") as q, ipcwire.graceful_shutdown(q):
    print("got", q.recv(timeout=10)["n"], flush=True)
    print("processed", flush=True)
"""


def _consumer(code: str, url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), url],
        env={**os.environ, "PYTHONPATH": SRC},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("code", [BLOCKING, ASYNCIO], ids=["blocking", "asyncio"])
def test_sigterm_gives_back_the_message_being_processed(spool_dir: Path, code: str) -> None:
    url = f"spool://{spool_dir}/jobs"
    with ipcwire.connect(url, codec="json") as q:
        q.send_many([{"n": 0}, {"n": 1}])
    proc = _consumer(code, url)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "got 0\n"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    assert "processed" not in out and "Traceback" not in err, (out, err)
    with ipcwire.connect(url, codec="json") as q:
        assert isinstance(q, SpoolChannel)
        first, second = q.claim(timeout=10), q.claim(timeout=10)
        assert sorted([first.message["n"], second.message["n"]]) == [0, 1]
        again = first if first.message["n"] == 0 else second
        assert again.attempt == 1  # delivered again, not lost
        first.ack()
        second.ack()


def test_a_shutdown_without_a_signal_still_acknowledges(spool_dir: Path) -> None:
    """Leaving the block normally is the end of the work: the last message is done."""
    url = f"spool://{spool_dir}/jobs"
    with ipcwire.connect(url, codec="json") as q:
        q.send({"n": 0})
    proc = _consumer(LEFT_AFTER_CLOSE, url)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out == "got 0\nprocessed\n", (out, err)
    with ipcwire.connect(url, codec="json") as q, pytest.raises(ipcwire.Timeout):
        q.recv(timeout=0)

"""The pure-Python ring under every wait policy: both ends' threads in one process, and two
processes.

A Python spinner holds the GIL while it looks at the ring; the thread it waits for (the peer's,
in the same process) needs the GIL to do its part. CPython takes the GIL from a busy thread
only after its switch interval (5 ms by default), so a spinner that never gave the GIL away
itself made every hand-over cost up to 5 ms, and under load the conformance suite's sends and
requests timed out now and then. The tests run in a fresh interpreter whose switch interval is
60 s: that safety net out of the way, a spinner that does not give the GIL away blocks the
other thread for good, every time, instead of now and then.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ._util import peer

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ["spin", "hybrid", "park"]

PING_PONG = """
import sys, threading
sys.setswitchinterval(60.0)
from tests.shm._util import ring_pair

policy = sys.argv[1]
kw = {"spin_ns": 10**10} if policy == "hybrid" else {}  # hybrid: all of it is the spin phase
ping_tx, ping_rx, m1 = ring_pair(1 << 14, "python", "python", policy=policy, **kw)
pong_tx, pong_rx, m2 = ring_pair(1 << 14, "python", "python", policy=policy, **kw)
errors = []

def echo():
    try:
        for _ in range(300):
            pong_tx.send(ping_rx.recv(timeout=3), timeout=3)
    except BaseException as exc:
        errors.append(exc)

t = threading.Thread(target=echo)
t.start()
try:
    for i in range(300):
        ping_tx.send(b"%d" % i, timeout=3)
        assert pong_rx.recv(timeout=3) == b"%d" % i
finally:
    t.join()
assert not errors, errors
print("ok")
"""

CONFORMANCE = """
import itertools, sys
sys.setswitchinterval(60.0)
import ipcwire.shm
from ipcwire.shm import SPEC
from ipcwire.testing import check_channel, pair_from_url

assert ipcwire.shm.IMPLEMENTATION == "python"
directory, policy = sys.argv[1:]
counter = itertools.count()
url = lambda: f"shm://{directory}/p{next(counter)}.sock?policy={policy}"
check_channel(pair_from_url(url), SPEC.capabilities, url=url, codecs=("bytes",))
print("ok")
"""


def _python(code: str, *args: str, timeout: float = 60) -> None:
    env = {**os.environ, "IPCWIRE_SHM_IMPL": "python"}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout.split() == ["ok"], proc.stderr[-3000:]


@pytest.mark.parametrize("policy", POLICIES)
def test_threads_ping_pong_over_python_rings(policy: str) -> None:
    """Two threads of one process, 300 round trips: each side's wait hands the GIL over."""
    _python(PING_PONG, policy)


@pytest.mark.parametrize("policy", POLICIES)
def test_python_ring_conformance(policy: str, sock_dir: Path) -> None:
    """The conformance suite (bytes codec) on the Python ring, under each wait policy."""
    _python(CONFORMANCE, str(sock_dir), policy)


@pytest.mark.parametrize("policy", POLICIES)
def test_two_processes_over_python_rings(policy: str) -> None:
    """A Python end in each process, echoing messages short and long (fragmented)."""
    with peer("server", "echo", impl="python", policy=policy) as p:
        link = p.link("client", impl="python", policy=policy, capacity=(1 << 14, 1 << 14))
        rng = random.Random(7)
        for _ in range(300):
            msg = rng.randbytes(rng.choice([0, 10, 1000, 3 * (1 << 14) + 5]))
            link.tx.send(msg, timeout=10)
            assert link.rx.recv(timeout=10) == msg
        link.close()
        p.finish()

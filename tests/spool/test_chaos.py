"""Several producer and consumer processes on one spool, killed (-9) at random and restarted:
every message sent is delivered at least once, none is lost, none is half-read.

Producers log each message after ``send`` returned (so a logged message is one the spool
accepted); consumers log each message they receive, with a check of its content hash. A
message is "sent" once logged; duplicates are allowed (at-least-once), losses and corruption
are not.
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest
from tests._proc import kill9, python, wait_until

import ipcwire
from ipcwire.errors import Timeout
from ipcwire.spool.blocking import SpoolChannel

PRODUCER = """
import hashlib, os, random
import ipcwire
log = {log!r}
done = [int(x) for x in open(log).read().split()] if os.path.exists(log) else []
fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
rng = random.Random()
with ipcwire.connect({url!r}, codec="json") as ch:
    for i in range(max(done, default=-1) + 1, {n}):
        pad = os.urandom(rng.randint(0, 6000)).hex()
        ch.send({{"p": {tag!r}, "i": i, "pad": pad, "h": hashlib.sha256(pad.encode()).hexdigest()}})
        os.write(fd, b"%d\\n" % i)
"""

CONSUMER = """
import hashlib, json, os
import ipcwire
fd = os.open({log!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
with ipcwire.connect({url!r}, codec="json", reap_interval=0.2) as ch:
    while True:
        try:
            m = ch.recv()
        except ipcwire.RemoteProtocolError:
            os.write(fd, b"CORRUPT\\n")
            continue
        ok = hashlib.sha256(m["pad"].encode()).hexdigest() == m["h"]
        os.write(fd, (json.dumps([m["p"], m["i"], ok]) + "\\n").encode())
"""


def _consumed(logs: list[Path]) -> list[list[object]]:
    out: list[list[object]] = []
    for log in logs:
        if not log.exists():
            continue
        for line in log.read_text().splitlines():
            if line == "CORRUPT":
                out.append(["CORRUPT", -1, False])
            elif line:
                out.append(json.loads(line))
    return out


def _chaos(spool_dir: Path, producers: int, n: int, consumers: int, kills: int, seed: int) -> None:
    url = f"spool://{spool_dir}/q"
    ipcwire.connect(url).close()  # create it
    rng = random.Random(seed)
    plogs = [spool_dir / f"p{k}.log" for k in range(producers)]
    clogs = [spool_dir / f"c{k}.log" for k in range(consumers)]

    def start_producer(k: int) -> subprocess.Popen[str]:
        return python(PRODUCER.format(log=str(plogs[k]), url=url, n=n, tag=f"P{k}"))

    def start_consumer(k: int) -> subprocess.Popen[str]:
        return python(CONSUMER.format(log=str(clogs[k]), url=url))

    prods = [start_producer(k) for k in range(producers)]
    cons = [start_consumer(k) for k in range(consumers)]
    finished: set[int] = set()
    try:
        done_kills = 0
        while len(finished) < producers:
            for k, proc in enumerate(prods):
                if k not in finished and proc.poll() is not None:
                    _, err = proc.communicate()
                    assert proc.returncode == 0, f"producer {k} failed: {err}"
                    finished.add(k)
            if done_kills >= kills:
                assert wait_until(lambda: all(p.poll() is not None for p in prods), 120)
                continue
            # wait for some progress, then kill someone at random and start a replacement
            # (or until every producer has ended: then no more can come, and the wait ran
            # out its 20 s, once or twice a run, when the last messages were fewer)
            target = len(_consumed(clogs)) + rng.randint(5, 25)
            wait_until(
                lambda t=target: (
                    len(_consumed(clogs)) >= t or all(p.poll() is not None for p in prods)
                ),
                timeout=20,
            )
            victims = [("p", k) for k in range(producers) if k not in finished]
            victims += [("c", k) for k in range(consumers)]
            kind, k = rng.choice(victims)
            if kind == "p":
                if prods[k].poll() is None:
                    kill9(prods[k])
                    prods[k].communicate()
                    prods[k] = start_producer(k)
            else:
                kill9(cons[k])
                cons[k].communicate()
                cons[k] = start_consumer(k)
            done_kills += 1
        sent = {(f"P{k}", int(i)) for k in range(producers) for i in plogs[k].read_text().split()}
        assert len(sent) == producers * n, "every producer finished its messages"
        # let the consumers get (nearly) everything, then kill them too
        wait_until(lambda: sent <= {(m[0], m[1]) for m in _consumed(clogs)}, timeout=60)
    finally:
        for proc in prods + cons:
            if proc.poll() is None:
                kill9(proc)
            proc.communicate()
    got = _consumed(clogs)
    # what the killed consumers held goes back; drain it here
    with ipcwire.connect(url, codec="json", reap_interval=0.05) as ch:
        assert isinstance(ch, SpoolChannel)
        while True:
            try:
                m = ch.recv(timeout=1.0)
            except Timeout:
                break
            got.append([m["p"], m["i"], True])
        counts = ch.store.counts()
    assert not [m for m in got if m[0] == "CORRUPT" or m[2] is not True], "half-read messages"
    delivered = {(str(m[0]), int(m[1])) for m in got}  # type: ignore[call-overload]
    assert sent - delivered == set(), f"lost: {sorted(sent - delivered)[:10]}"
    attempted = {(f"P{k}", i) for k in range(producers) for i in range(n)}
    assert delivered <= attempted
    assert counts["new"] == 0 and counts["cur"] == 0 and counts["dead"] == 0, counts


def test_random_kill9_loses_nothing(spool_dir: Path) -> None:
    _chaos(spool_dir, producers=3, n=120, consumers=3, kills=10, seed=1)


@pytest.mark.slow
def test_random_kill9_soak(spool_dir: Path) -> None:
    _chaos(spool_dir, producers=6, n=1500, consumers=4, kills=80, seed=2)

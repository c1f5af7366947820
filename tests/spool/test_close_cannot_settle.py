"""When a delivery cannot be put back or removed (the spool's cur/ became read-only for this
consumer: a wrong chmod, a read-only remount), release() and ack() raise a typed error, and
close() still closes everything and raises nothing: the messages stay in cur/, unlocked, and
the next consumer's reaper returns them (at-least-once, nothing lost)."""

from __future__ import annotations

import os
from pathlib import Path

from tests._proc import NOBODY, python, wait_line

import ipcwire
from ipcwire.spool.blocking import SpoolChannel

CONSUMER = """
import os, sys, ipcwire, ipcwire.spool.blocking
ipcwire.mechanisms()
os.setgroups([]); os.setgid({nobody}); os.setuid({nobody})


def kind(exc):
    return ("typed " if isinstance(exc, ipcwire.IpcwireError) else "UNTYPED ") + repr(exc)


before = len(os.listdir("/proc/self/fd"))
ch = ipcwire.connect({url!r})
ch.send_many([b"a", b"b", b"c"])
d1, d2 = ch.claim(timeout=5), ch.claim(timeout=5)
assert ch.recv(timeout=5) == b"c"  # acked at close
print("claimed", flush=True)
sys.stdin.readline()  # cur/ is read-only for us now
try:
    d1.release()
    print("release: returned")
except Exception as exc:
    print("release:", kind(exc))
try:
    ch.close()  # releases d2, acks c
    print("close: returned")
except Exception as exc:
    print("close:", kind(exc))
print("fds left:", len(os.listdir("/proc/self/fd")) - before)
"""


def test_close_settles_what_it_can_and_closes_everything(spool_dir: Path) -> None:
    os.chmod(spool_dir, 0o777)
    url = f"spool://{spool_dir}/q"
    cur = spool_dir / "q" / "cur"
    proc = python(CONSUMER.format(nobody=NOBODY, url=url))
    try:
        assert wait_line(proc) == "claimed"
        os.chmod(cur, 0o500)  # its owner (nobody) may no longer rename or unlink in it
        out, err = proc.communicate("go\n", timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=20)
    os.chmod(cur, 0o700)
    lines = out.splitlines()
    assert proc.returncode == 0, err
    # before: PermissionError from release(), and from close(), which left 5 descriptors open
    assert lines[0].startswith("release: typed PermissionDenied(") and "cur/" in lines[0], out
    assert lines[1:] == ["close: returned", "fds left: 0"], out
    assert "stays in cur/" in err  # close() logged what it could not settle
    got = {}
    q = spool_dir / "q"  # (this process uses only a spool of its own: hand it over)
    for sub in (q, *(p for p in q.iterdir() if p.is_dir())):
        os.chown(sub, os.getuid(), os.getgid())
    with ipcwire.connect(url) as c:
        assert isinstance(c, SpoolChannel)
        for _ in range(3):
            d = c.claim(timeout=5)  # its first look reaps: all three come back
            got[d.message] = d.attempt
            assert d.ack()
        assert c.store.counts() == {"tmp": 0, "new": 0, "cur": 0, "dead": 0}
    assert got == {b"a": 1, b"b": 1, b"c": 1}

"""max_attempts counts every delivery, those a lease took from a stuck consumer included."""

from __future__ import annotations

import os
import time
from pathlib import Path

import ipcwire
from ipcwire.errors import Timeout
from ipcwire.spool.blocking import SpoolChannel


def _open(url: str, **kw: object) -> SpoolChannel:
    ch = ipcwire.connect(url, **kw)  # type: ignore[arg-type]
    assert isinstance(ch, SpoolChannel)
    return ch


def _age(spool: Path) -> None:
    """Make every claim in cur/ look an hour old (its lease long expired)."""
    old = time.time() - 3600
    for name in os.listdir(spool / "cur"):
        os.utime(spool / "cur" / name, (old, old))


def test_a_message_that_always_outlives_its_lease_goes_to_dead(spool_dir: Path) -> None:
    url = f"spool://{spool_dir}/q"
    q = spool_dir / "q"
    opts = {"lease": 60, "max_attempts": 2}
    with _open(url, **opts) as a, _open(url, **opts) as b, _open(url, **opts) as c:
        a.send(b"poison")
        first = a.claim(timeout=5)  # attempt 0: the consumer gets stuck on it
        _age(q)
        second = b.claim(timeout=5)  # its lease expired: attempt 1, stuck again
        assert second.message == b"poison" and second.attempt == 1
        _age(q)
        c.store.reap()  # that was the last of max_attempts=2: dead/, not a third delivery
        assert c.store.counts() == {"tmp": 0, "new": 0, "cur": 0, "dead": 1}
        try:
            third = c.claim(timeout=0)
        except Timeout:
            pass
        else:
            raise AssertionError(f"delivered a third time (attempt {third.attempt})")
        assert first.ack() is False and second.ack() is False


def test_a_redelivery_copy_whose_reaper_died_is_delivered_not_deleted(spool_dir: Path) -> None:
    """A lease redelivery writes a copy to tmp/, moves the claimed original out of cur/ to
    tmp/~NAME, then renames the copy into new/. A reaper killed between the last two steps
    leaves the only deliverable copy of the message in tmp/: cleaning tmp/ must deliver it,
    not delete it (and remove the original's mark). See also test_killed_lease_copy.py."""
    url = f"spool://{spool_dir}/q"
    q = spool_dir / "q"
    with _open(url, reap_interval=0.01) as c:
        base = "00000000000000000001.4242-deadbeef.0000000001"
        left = q / "tmp" / f"{base}.1"  # the copy; cur/{base}.0 is gone, to tmp/~{base}.0
        left.write_bytes(b"the only copy")
        (q / "tmp" / f"~{base}.0").write_bytes(b"the only copy")
        half = q / "tmp" / "00000000000000000002.4242-deadbeef.0000000002.0"
        half.write_bytes(b"half a mess")  # a producer's, killed mid-write
        old = time.time() - 3600
        for p in (left, half):
            os.utime(p, (old, old))
        d = c.claim(timeout=5)
        assert d.message == b"the only copy" and d.attempt == 1
        assert d.ack() is True
        assert os.listdir(q / "tmp") == []  # the half-written one is gone, as before

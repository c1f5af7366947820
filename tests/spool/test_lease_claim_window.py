"""A message that waited in new/ longer than ``lease`` is not taken back from the consumer
that is claiming it.

The lease is measured from a claim's mtime, set at claim time. Before, it was set after the
rename into cur/ and the read: in between, cur/ held the message with the time it was sent,
and another consumer's reap took it for a claim held that long. It redelivered the message
while the first consumer was still reading it (whose ack() then said False): one message
to two consumers, with no lease expired. The mtime is now set before the rename.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import ipcwire
import ipcwire.spool._consume as consume
from ipcwire.spool._files import _read_all as real
from ipcwire.spool.blocking import SpoolChannel


def _open(url: str) -> SpoolChannel:
    ch = ipcwire.connect(url)
    assert isinstance(ch, SpoolChannel)
    return ch


def test_a_reap_during_a_claim_does_not_redeliver_it(
    spool_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"spool://{spool_dir}/q?lease=5"
    new = spool_dir / "q" / "new"
    with ipcwire.connect(url) as p:
        p.send(b"job")
    old = time.time() - 60  # it waited a minute: longer than the lease
    for name in os.listdir(new):
        os.utime(new / name, (old, old))
    with _open(url) as other, _open(url) as c:
        reaped: list[int] = []

        def read_all(fd: int, size: int) -> bytes:
            monkeypatch.setattr(consume, "_read_all", real)  # (once: a reap may read too)
            reaped.append(other.store.reap())  # another consumer reaps during the claim
            return real(fd, size)

        monkeypatch.setattr(consume, "_read_all", read_all)
        delivery = c.claim(timeout=5)
        assert reaped == [0]
        assert delivery.message == b"job"
        assert delivery.ack() is True
        assert c.store.counts() == {"tmp": 0, "new": 0, "cur": 0, "dead": 0}

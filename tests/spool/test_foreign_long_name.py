"""A file put into new/ by something else, with a name too long to count another attempt in
(``<name>.<attempt>`` over the file system's 255 bytes): when it is released, or its consumer
died, it goes to dead/ instead of staying in cur/ for ever (never delivered again, and
reaped in vain at every reap_interval by every consumer)."""

from __future__ import annotations

from pathlib import Path

import pytest

import ipcwire
from ipcwire.spool.blocking import SpoolChannel

LONG = "x" * 255


def test_released_it_goes_to_dead(spool_dir: Path) -> None:
    q = spool_dir / "q"
    ipcwire.connect(f"spool://{q}").close()
    (q / "new" / LONG).write_bytes(b"foreign")
    with pytest.raises(RuntimeError), ipcwire.connect(f"spool://{q}") as c:
        assert c.recv(timeout=5) == b"foreign"
        raise RuntimeError("processing failed")  # leaving by an exception releases it
    assert sorted(p.name for p in (q / "dead").iterdir()) == [LONG]
    assert list((q / "cur").iterdir()) == [] and list((q / "new").iterdir()) == []


def test_its_consumer_dead_the_reaper_moves_it_to_dead(spool_dir: Path) -> None:
    q = spool_dir / "q"
    ipcwire.connect(f"spool://{q}").close()
    (q / "cur" / LONG).write_bytes(b"foreign")  # claimed by a consumer that died: unlocked
    with ipcwire.connect(f"spool://{q}") as c:
        assert isinstance(c, SpoolChannel)
        c.store.reap()
        assert c.store.counts() == {"tmp": 0, "new": 0, "cur": 0, "dead": 1}

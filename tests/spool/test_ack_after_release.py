"""ack() of a delivery that was put back (released, or released by closing the channel) says
False: the message is coming again, so the caller must not count it as done."""

from __future__ import annotations

from pathlib import Path

import ipcwire
from ipcwire.spool.blocking import SpoolChannel


def _open(url: str) -> SpoolChannel:
    ch = ipcwire.connect(url)
    assert isinstance(ch, SpoolChannel)
    return ch


def test_ack_after_close_released_the_delivery_is_false(spool_dir: Path) -> None:
    url = f"spool://{spool_dir}/q"
    with _open(url) as p:
        p.send_many([b"a", b"b"])
    c = _open(url)
    d = c.claim(timeout=5)
    c.close()  # releases d: "a" goes back to the queue
    assert d.ack() is False
    with _open(url) as c2:
        e = c2.claim(timeout=5)
        assert e.message == b"a" and e.attempt == 1  # it did come again
        e.release()
        assert e.ack() is False
        got = {}
        for _ in range(2):
            f = c2.claim(timeout=5)
            got[f.message] = f.attempt
            assert f.ack() is True and f.ack() is True
        assert got == {b"a": 2, b"b": 0}

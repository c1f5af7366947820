"""close() from one thread while another acks or releases a delivery, or closes too: each
delivery is acked or put back exactly once, its descriptor closed once (never a descriptor
some other file got meanwhile), and close() raises nothing. The interleavings are lined up
by pausing a thread at a line of the real code (no sleeps)."""

from __future__ import annotations

import os
from pathlib import Path

from tests._pause import PauseAt

import ipcwire
from ipcwire.spool._consume import Claim
from ipcwire.spool.blocking import SpoolChannel


def _open(url: str) -> SpoolChannel:
    ch = ipcwire.connect(url)
    assert isinstance(ch, SpoolChannel)
    return ch


def _nfds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _fill_holes(upto: int) -> list[int]:
    """Open /dev/null into every free descriptor number up to ``upto``, as files opened by
    other threads meanwhile would: a number freed there is in use again."""
    free = [n for n in range(upto + 1) if not _is_open(n)]
    return [os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC) for _ in free]


def _close_all(fds: list[int]) -> list[int]:
    """Close ``fds``; the ones that were closed under us already."""
    gone = [fd for fd in fds if not _is_open(fd)]
    for fd in fds:
        if fd not in gone:
            os.close(fd)
    return gone


def _drain(url: str) -> dict[bytes, int]:
    """What the spool holds now: message -> attempt (each acked), and nothing left over."""
    got: dict[bytes, int] = {}
    with _open(url) as ch:
        while ch.store.counts()["new"]:
            d = ch.claim(timeout=5)
            assert d.message not in got, "delivered twice"
            got[d.message] = d.attempt
            assert d.ack() is True
        assert ch.store.counts() == {"tmp": 0, "new": 0, "cur": 0, "dead": 0}
    return got


def test_an_ack_under_way_while_close_releases_the_delivery(spool_dir: Path) -> None:
    url = f"spool://{spool_dir}/q"
    with _open(url) as p:
        p.send(b"a")
    before = _nfds()
    c = _open(url)
    d = c.claim(timeout=5)
    gate = PauseAt(Claim.ack, "self.done = True")
    gate.start(d.ack)
    gate.wait_reached()  # the consumer's ack has found the delivery unfinished
    c.close()  # releases what is unfinished
    spares = _fill_holes(d._claim.fd)  # before the fix: close() had closed the claim's fd
    acked = gate.join()
    closed_under_us = _close_all(spares)
    assert not closed_under_us, "ack() closed a descriptor that was no longer its own"
    assert _nfds() == before
    assert acked is True  # it had begun: close() left the delivery to it
    assert _drain(url) == {}


def test_close_releasing_while_the_consumer_acks(spool_dir: Path) -> None:
    url = f"spool://{spool_dir}/q"
    with _open(url) as p:
        p.send_many([b"a", b"b"])
    before = _nfds()
    c = _open(url)
    d1, d2 = c.claim(timeout=5), c.claim(timeout=5)
    gate = PauseAt(
        Claim.release, "self.done = True", when=lambda f: f.f_locals["self"] is d1._claim
    )
    gate.start(c.close)
    gate.wait_reached()  # close() is releasing d1: it found it unfinished
    acked = d1.ack()  # before the fix: True (removed, fd closed); then close() closed it again
    gate.join()  # before the fix: OSError (EBADF) out of close(), d2 never released
    assert d1.done and d2.done
    assert _nfds() == before
    assert acked is False  # close() had begun releasing it: it comes again
    assert _drain(url) == {b"a": 1, b"b": 1}


def test_two_threads_closing_at_once(spool_dir: Path) -> None:
    url = f"spool://{spool_dir}/q"
    with _open(url) as p:
        p.send(b"a")
    before = _nfds()
    c = _open(url)
    d = c.claim(timeout=5)
    gate = PauseAt(SpoolChannel._close, "self._closed = True")
    gate.start(c.close)
    gate.wait_reached()  # one close() has found the channel open
    c.close()  # another thread closes it meanwhile
    spares = _fill_holes(max(c._wake, c._wake_w))
    gate.join()  # before the fix: wrote to and closed the wake-up descriptor again
    closed_under_us = _close_all(spares)
    assert not closed_under_us, "close() closed a descriptor that was no longer its own"
    assert d.done and _nfds() == before
    assert _drain(url) == {b"a": 1}

"""Which listener owns a queue name, when listeners start while another closes: the ownership
lock file is removed by a closing listener, so a listener that had opened it just before must
not take the removed file's lock for ownership (two listeners on one queue), and whether the
queue is ipcwire's is told by the lock file found when locking, not by a look before."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from tests._pause import PauseAt

import ipcwire
from ipcwire.channel import Channel, Listener
from ipcwire.errors import AddressInUse
from ipcwire.mq import _rendezvous
from ipcwire.mq.blocking import MqListener
from ipcwire.spool._flock import FileLock


def _round_trip(listener: Listener, url: str) -> None:
    box: list[Channel] = []
    t = threading.Thread(target=lambda: box.append(listener.accept(timeout=10)))
    t.start()
    with ipcwire.connect(url, timeout=10) as client:
        t.join(10)
        with box[0] as server:
            client.send(b"ping")
            assert server.recv(timeout=5) == b"ping"


def test_a_listener_starting_while_one_closes_does_not_share_the_next_ones_queue(
    mq_url: Callable[..., str],
) -> None:
    url = mq_url()
    first = ipcwire.listen(url)
    gate = PauseAt(FileLock._try, "fcntl.flock(fd, op)")
    gate.start(ipcwire.listen, url)
    gate.wait_reached()  # the second has opened the lock file the first holds
    first.close()  # removes its queue and the lock file, then lets go of the lock
    with ipcwire.listen(url) as third:  # a new lock file, a new queue
        gate.go()
        second: Listener | None = None
        try:
            second = gate.join()  # before the fix: it adopted the third's queue
        except AddressInUse as exc:
            assert exc.pid == os.getpid()
        if second is not None:
            second.close()  # (unlinks the queue the third listens on)
        assert second is None, "two listeners owned one queue"
        _round_trip(third, url)


def test_a_lock_file_made_while_a_listener_starts_still_marks_the_queue_as_ipcwires(
    mq_url: Callable[..., str],
) -> None:
    url = mq_url()
    # the second starts when there is no lock file yet, and stops before locking
    gate = PauseAt(_rendezvous.bind_rendezvous, "lock = FileLock(path")
    gate.start(ipcwire.listen, url)
    gate.wait_reached()
    ipcwire.listen(url, unlink=False).close()  # leaves its lock file and queue, for adoption
    # before the fix: "a queue exists that no ipcwire listener created", and the lock file
    # removed, so that every later listener said the same
    second = gate.join()
    assert isinstance(second, MqListener)
    with second:
        _round_trip(second, url)

"""A send that waits a long time for .order (a consumer stopped while listing new/) keeps its
files in tmp/, and queues them when the lock is let go.

Before, the send closed its tmp/ files, and with them their locks, before it waited for
.order; once they were a minute old, any other consumer's reap removed them as abandoned,
and when the stopped consumer resumed, the send failed with ChannelBroken (No such file or
directory) instead of queueing: the docs say it waits until the holder lets go. A minute of
waiting is simulated by ageing the files.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import ipcwire
from ipcwire.spool.blocking import SpoolChannel


def _open(url: str) -> SpoolChannel:
    ch = ipcwire.connect(url)
    assert isinstance(ch, SpoolChannel)
    return ch


def test_a_long_wait_for_order_loses_nothing_to_a_reaper(spool_dir: Path) -> None:
    url = f"spool://{spool_dir}/q?fsync=0"
    tmp = spool_dir / "q" / "tmp"
    with _open(url) as producer, _open(url) as consumer:
        order = os.open(spool_dir / "q" / ".order", os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(order, fcntl.LOCK_EX)  # a consumer stopped while listing new/
            out: dict[str, object] = {}

            def send() -> None:
                try:
                    producer.send_many([b"one", b"two"], timeout=10)
                    out["ok"] = True
                except BaseException as exc:  # (reported to the test)
                    out["error"] = exc

            t = threading.Thread(target=send, daemon=True)
            t.start()
            deadline = time.monotonic() + 5
            while len(os.listdir(tmp)) < 2 and time.monotonic() < deadline:
                time.sleep(0.001)
            old = time.time() - 120  # the send has waited two minutes
            for name in os.listdir(tmp):
                os.utime(tmp / name, (old, old))
            consumer.store.reap()  # another consumer's reap meanwhile
            assert len(os.listdir(tmp)) == 2
        finally:
            os.close(order)  # the stopped consumer resumes
        t.join(5)
        assert out == {"ok": True}
        assert consumer.recv_many(timeout=5) == [b"one", b"two"]

"""A FIFO put into a spool by something else, where ipcwire opens files without expecting
one: in tmp/ (a reaper opens what is stale there) and as the spool's .order lock file.

Before, both opens blocked for ever (a FIFO's open for reading waits for a writer): the
consumer whose reap found a stale FIFO in tmp/ hung in recv(timeout=1), and its close() from
another thread then waited for it; connect() to a spool whose .order was a FIFO never
returned. Now the reaper opens without blocking (and removes the FIFO like any abandoned
temporary file), and connect() raises PermissionDenied naming the file and the fix.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import ipcwire
from ipcwire.errors import PermissionDenied


def _in_thread(fn: object, limit: float = 5.0) -> dict[str, object]:
    """Run ``fn`` in a daemon thread for at most ``limit`` s: its result or error, or
    nothing if it still runs (hung)."""
    out: dict[str, object] = {}

    def run() -> None:
        try:
            out["result"] = fn()  # type: ignore[operator]
        except BaseException as exc:  # (reported to the test)
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(limit)
    return out


def test_a_stale_fifo_in_tmp_does_not_hang_the_reaping_consumer(spool_dir: Path) -> None:
    url = f"spool://{spool_dir}/q"
    with ipcwire.connect(url) as p:
        p.send(b"job")
    fifo = spool_dir / "q" / "tmp" / "left-by-another-program"
    os.mkfifo(fifo)
    old = time.time() - 3600
    os.utime(fifo, (old, old))  # stale: a reaper opens it
    with ipcwire.connect(url) as c:
        t0 = time.monotonic()
        out = _in_thread(lambda: c.recv(timeout=1))
        assert out.get("result") == b"job", out or "recv(timeout=1) hung in the reap"
        assert time.monotonic() - t0 < 2
    assert not fifo.exists()  # removed like any abandoned temporary file


def test_a_fifo_for_the_order_lock_file_is_refused(spool_dir: Path) -> None:
    spool = spool_dir / "q"
    spool.mkdir(mode=0o700)
    os.mkfifo(spool / ".order", 0o600)
    out = _in_thread(lambda: ipcwire.connect(f"spool://{spool}"))
    assert out, "connect() hung opening .order"
    err = out.get("error")
    assert isinstance(err, PermissionDenied), out
    assert str(spool / ".order") in str(err) and "remove it" in str(err)
    assert err.endpoint == f"spool://{spool}"

"""``serve(max_channels=)`` is documented where users read, and does what the words say.

``serve()`` is unbounded by default (a thread and ~280 KiB per idle client) and
``max_channels`` was mentioned nowhere a user reads: not in serve()'s docstring, not in
unix.md.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import ipcwire
from ipcwire.errors import Timeout

UNIX_MD = Path(__file__).resolve().parents[2] / "docs" / "mechanisms" / "unix.md"


def test_serve_and_unix_md_say_what_max_channels_bounds() -> None:
    doc = ipcwire.Listener.serve.__doc__ or ""
    assert "max_channels" in doc and "thread" in doc and "backlog=" in doc, doc
    page = UNIX_MD.read_text()
    assert "max_channels=" in page and "threads" in page


def test_max_channels_as_documented(unix_url: Callable[[], str]) -> None:
    """Two handled at once; one more waits connected (backlog=1); the next times out."""
    release = threading.Event()
    started = threading.Semaphore(0)

    def handler(ch: ipcwire.Channel) -> None:
        started.release()
        release.wait(10)
        ch.send(ch.recv(timeout=5))

    with ipcwire.listen(unix_url(), backlog=1) as lst:
        t = threading.Thread(target=lst.serve, args=(handler,), kwargs={"max_channels": 2})
        t.start()
        try:
            first = [ipcwire.connect(lst.url, timeout=5) for _ in range(2)]
            assert started.acquire(timeout=5) and started.acquire(timeout=5)
            waiting = ipcwire.connect(lst.url, timeout=5)  # connected, not yet handled
            assert not started.acquire(timeout=0.1)
            with pytest.raises(Timeout):
                ipcwire.connect(lst.url, timeout=0.5)
            release.set()
            for ch in first:
                with ch:
                    assert ch.request(b"x", timeout=5) == b"x"
            with waiting:
                assert waiting.request(b"y", timeout=5) == b"y"
        finally:
            release.set()
            lst.close()
            t.join(10)

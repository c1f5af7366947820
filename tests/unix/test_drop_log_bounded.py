"""A flood of clients that never handshake writes a bounded log, not one line each.

Connections that never sent a hello produced 36,265 INFO lines in 12 s ("dropped pid N: it
was the oldest of 512"), and each client that sent garbage a WARNING. A listener now logs the
first few of each kind, then one line with the count of the rest: when its window ends
(every 10 s), or when it closes.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests._loops import AioRun

import ipcwire
from ipcwire import _droplog as droplog_mod
from ipcwire import aio

SILENT = 300  # connect, say nothing, half-close
GARBAGE = 100  # send a frame that is not an ipcwire hello
SUMMARY = re.compile(r"([\d,]+) more clients dropped or refused in the last")


def flood(path: str) -> None:
    """Returns once the server has handled every client of the flood (each saw its end)."""
    socks = []
    for i in range(SILENT + GARBAGE):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)  # blocking: waits while the listener's backlog is full
        s.settimeout(10)
        s.sendall(b"\0\0\0\x03abc") if i >= SILENT else s.shutdown(socket.SHUT_WR)
        socks.append(s)
    for s in socks:
        while s.recv(4096):
            pass
        s.close()


class Records(logging.Handler):
    """The ipcwire records; ``summary`` is set once a count line arrives."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self.summary = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if SUMMARY.search(record.getMessage()):
            self.summary.set()

    def check(self, *, windows: int = 1) -> None:
        """Few lines, and every client of the flood in them, logged or counted; one count
        line (the flood is over within a window), or up to ``windows`` of them."""
        lines = [r.getMessage() for r in self.records]
        counted = [int(m[1].replace(",", "")) for line in lines if (m := SUMMARY.search(line))]
        assert 1 <= len(counted) <= windows, lines
        one_by_one = len(lines) - len(counted)
        assert one_by_one <= 4 * 5 * len(counted), lines  # a few kinds, the first 5 of each
        assert one_by_one + sum(counted) == SILENT + GARBAGE, lines


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("ipcwire")
    old = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def test_blocking_listener_counts_a_flood_in_one_line_at_close(
    sock_dir: Path, records: Records
) -> None:
    path = f"{sock_dir}/flood.sock"
    with ipcwire.listen(f"unix://{path}"):
        flood(path)
        assert not records.summary.is_set()  # the window (10 s) is not over
    records.check()


def test_asyncio_listener_counts_a_flood_in_one_line_at_close(
    sock_dir: Path, records: Records, aio_run: AioRun
) -> None:
    path = f"{sock_dir}/flood.sock"

    async def main() -> None:
        lst = await aio.listen(f"unix://{path}")
        try:
            await asyncio.to_thread(flood, path)
            assert not records.summary.is_set()
        finally:
            lst.close()

    aio_run(main())
    records.check()


def test_the_count_comes_when_the_window_ends(
    sock_dir: Path, records: Records, aio_run: AioRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the listener stays open and nothing else happens (both APIs)."""
    monkeypatch.setattr(droplog_mod, "_LOG_WINDOW", 0.3)
    path = f"{sock_dir}/flood.sock"
    with ipcwire.listen(f"unix://{path}"):
        flood(path)
        assert records.summary.wait(10)
    records.check(windows=5)

    records.records.clear()
    records.summary.clear()

    async def main() -> None:
        lst = await aio.listen(f"unix://{path}")
        try:
            await asyncio.to_thread(flood, path)
            assert await asyncio.to_thread(records.summary.wait, 10)
        finally:
            lst.close()

    aio_run(main())
    records.check(windows=5)

"""Threads receiving on one UDP channel at once: each datagram is delivered intact, exactly
once. The blocking driver reads into one buffer per socket; a message must be decoded (or
copied) before another thread's read may overwrite it."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
from typing import Any

import pytest

from ipcwire.errors import Timeout
from ipcwire.udp import aio
from ipcwire.udp.blocking import UdpChannel, bind

N = 1500
WINDOW = 8  # datagrams in flight: the receive buffer holds them all, so the kernel drops none


def _message(i: int) -> dict[str, Any]:
    # big enough that decoding it takes a while, and different from one to the next: an
    # overwrite while it is decoded shows as a wrong message or an undecodable one
    return {"i": i, "pad": f"{i:06d}" * (1000 + 37 * (i % 11))}


def _check(got: list[Any]) -> None:
    bad = [m for m in got if not isinstance(m, dict) or m != _message(m.get("i", -1))]
    assert bad == [], f"{len(bad)} of {N} messages delivered damaged"
    ids = sorted(m["i"] for m in got)
    assert ids == list(range(N)), "a message was delivered twice or not at all"


def _send_all(addr: Any, received: threading.Semaphore) -> None:
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for start in range(0, N, WINDOW):
            end = min(start + WINDOW, N)
            for i in range(start, end):
                tx.sendto(json.dumps(_message(i)).encode(), addr)
            for _ in range(start, end):
                assert received.acquire(timeout=5), "a datagram was not delivered"
    finally:
        tx.close()


def _run(rx: UdpChannel, take: str, *, raw: bool = False) -> None:
    got: list[list[Any]] = [[], []]
    errors: list[BaseException] = []
    received = threading.Semaphore(0)
    stop = threading.Event()

    def receive(mine: list[Any]) -> None:
        while not stop.is_set():
            try:
                msg = rx.recv(timeout=0.05) if take == "recv" else rx.recv_from(timeout=0.05)[0]
            except Timeout:
                continue
            except BaseException as exc:  # (a damaged datagram: reported below)
                errors.append(exc)
                msg = None
            mine.append(json.loads(msg) if raw and msg is not None else msg)
            received.release()

    threads = [threading.Thread(target=receive, args=(g,)) for g in got]
    for t in threads:
        t.start()
    try:
        _send_all(rx.local_address, received)
    finally:
        stop.set()
        for t in threads:
            t.join(5)
    assert errors == [], f"{len(errors)} of {N}: {errors[:2]}"
    assert got[0] and got[1], "both threads should have received some"
    _check(got[0] + got[1])


class _HeaderFirst:
    """A codec written in Python that reads its buffer in parts, as the Codec protocol
    allows (the buffer is valid during the call): a JSON header line, then the body."""

    name = "header-first"

    def encode(self, obj: Any) -> bytes:
        return json.dumps(obj).encode()

    def decode(self, data: memoryview) -> Any:
        head = bytes(data[:16])
        checks = [int(c) for c in head if c in b"0123456789"]  # some Python work between
        if not checks:
            return None
        return json.loads(bytes(data))


@pytest.mark.parametrize("take", ["recv", "recv_from"])
@pytest.mark.parametrize("codec", ["json", "bytes", "header-first"])
def test_two_threads_receiving_each_get_intact_datagrams_exactly_once(
    take: str, codec: str
) -> None:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # threads switch often: what a busy process sees, sooner
    try:
        with bind(
            "udp://127.0.0.1:0", codec=_HeaderFirst() if codec == "header-first" else codec
        ) as rx:
            _run(rx, take, raw=codec == "bytes")
    finally:
        sys.setswitchinterval(old)


def test_two_tasks_receiving_each_get_intact_datagrams_exactly_once() -> None:
    async def main() -> None:
        rx = await aio.bind("udp://127.0.0.1:0", codec="json")
        got: list[list[Any]] = [[], []]
        received = threading.Semaphore(0)

        async def receive(mine: list[Any]) -> None:
            while True:
                mine.append(await rx.recv())
                received.release()

        tasks = [asyncio.create_task(receive(g)) for g in got]
        try:
            await asyncio.to_thread(_send_all, rx.local_address, received)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await rx.aclose()
        _check(got[0] + got[1])

    asyncio.run(main())

"""A hostile producer in another process that never lets the ring run dry must not keep a
timed receive past its deadline (nor a receive without waiting, nor a batch, for ever).

The producer here is not a ring end: a separate process maps the same memfd and writes
records and the tail index by hand, keeping the tail a whole ring ahead of the head the
consumer publishes, so the consumer always finds more to skip and never waits (which is where
deadlines used to be checked):

* ``discard``: after a first fragment announcing a message over ``max_message`` (which the
  consumer then skips fragment by fragment), zero-length middle fragments for ever;
* ``reassemble``: after a first fragment announcing 1 MiB, zero-length middle fragments for
  ever (they add nothing, so the message never completes);
* ``pads``: padding records at the start of the ring, one more lap each time the consumer
  has caught up (a real producer pads only the end of a lap, never from offset 0);
* ``messages``: zero-length messages for ever, for ``recv_many``.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from ipcwire.errors import FrameTooLarge, RemoteProtocolError, Timeout
from ipcwire.shm import _layout as L
from ipcwire.shm._ring import RingEnd, init_ring, make_ring

from ._util import IMPLS

SMALL, LARGE = 1 << 16, 1 << 26  # ring capacities: 64 KiB, and 64 MiB (a ring full of empty
# records keeps even a C consumer busy for tens of milliseconds: the hostile process, scheduled
# out now and then, still never lets it run dry)


def _span(cap: int) -> int:
    return L.ring_span(cap) + 4096  # and a page after the ring: its first byte says "stop"


HOSTILE = f"""
import mmap, struct, sys, time

fd, mode, CAP, STOP = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
mm = mmap.mmap(fd, STOP + 4096)
u64 = memoryview(mm)[:{L.HEADER_SIZE}].cast("Q")
TAIL, HEAD, DATA = {L.TAIL}, {L.HEAD}, {L.HEADER_SIZE}
rec = struct.Struct("=IIQ")
kind = {{"messages": {L.MSG}, "pads": {L.PAD}}}.get(mode, {L.MIDDLE})
mm[DATA : DATA + CAP] = rec.pack(0, kind, 0) * (CAP // 16)  # empty records, all over
if mode in ("discard", "reassemble"):  # a first fragment, taken by a call of the test's own
    rec.pack_into(mm, DATA, 0, {L.FIRST}, (1 << 40) if mode == "discard" else (1 << 20))
    u64[TAIL] = 16
    print("ready", flush=True)
    while u64[HEAD] < 16:
        time.sleep(0.001)
    rec.pack_into(mm, DATA, 0, {L.MIDDLE}, 0)
else:
    print("ready", flush=True)
u64[TAIL] = u64[HEAD] + CAP
print("flooding", flush=True)
# the tests' own bounds are far shorter; an endless batch (before the fix) grew a list by
# tens of millions of entries a second, hence the shorter end for "messages"
end = time.monotonic() + (2 if mode == "messages" else 20)
i = 0
while mm[STOP] == 0 and (i & 1023 or time.monotonic() < end):
    i += 1
    head = u64[HEAD]
    if mode != "pads":
        u64[TAIL] = head + CAP  # always a whole ring ahead
    elif head == u64[TAIL]:  # caught up: one more lap of padding
        u64[TAIL] = head + CAP
"""


class Hostile:
    """A consumer ring end in a memfd (``rx``), and the hostile producer process writing into
    it (``proc``)."""

    def __init__(self, rx: RingEnd, mm: mmap.mmap) -> None:
        self.rx = rx
        self._head = memoryview(mm)[: L.HEADER_SIZE].cast("Q")

    def head(self) -> int:
        """What the consumer has given back so far (its published head index)."""
        return int(self._head[L.HEAD])


@contextmanager
def hostile(mode: str, impl: str, cap: int, **kw: object) -> Iterator[Hostile]:
    fd = os.memfd_create("iw-hostile")
    bell = os.eventfd(0, os.EFD_NONBLOCK)  # never rung: the hostile producer ignores it
    stop = L.ring_span(cap)
    try:
        os.ftruncate(fd, _span(cap))
        mm = mmap.mmap(fd, _span(cap))
        init_ring(mm, cap, impl=impl)
        rx = make_ring(
            mm, "consumer", impl=impl, size=stop, name="hostile", wait_fd=bell, **kw
        )  # policy hybrid: it spins, then parks (the loops under test do not wait at all)
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(HOSTILE), str(fd), mode, str(cap), str(stop)],
            pass_fds=[fd],
            stdout=subprocess.PIPE,
            text=True,
        )
        h = Hostile(rx, mm)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n"
            if mode in ("discard", "reassemble"):  # the first fragment
                with pytest.raises(FrameTooLarge if mode == "discard" else Timeout):
                    rx.recv(timeout=0)
            assert proc.stdout.readline() == "flooding\n"
            yield h
        finally:
            mm[stop] = 1
            out, _ = proc.communicate(timeout=30)
            rx.close()
            h._head.release()
            assert proc.returncode == 0, out
    finally:
        os.close(fd)
        os.close(bell)


@contextmanager
def within(seconds: float) -> Iterator[None]:
    t0 = time.monotonic()
    yield
    elapsed = time.monotonic() - t0
    assert elapsed < seconds, f"took {elapsed:.1f} s"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", ["discard", "reassemble"])
def test_endless_fragments_do_not_keep_a_timed_receive_past_its_deadline(
    impl: str, mode: str
) -> None:
    # discard: the first fragment announced 1 TiB, over max_message, so its fragments are
    # skipped; reassemble: 1 MiB announced, and the empty fragments never add up to it
    with hostile(mode, impl, LARGE, max_message=1 << 20) as h, within(3), pytest.raises(Timeout):
        h.rx.recv(timeout=0.2)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", ["discard", "reassemble"])
def test_endless_fragments_do_not_keep_a_receive_that_does_not_wait(impl: str, mode: str) -> None:
    with hostile(mode, impl, SMALL, max_message=1 << 20) as h, within(3):
        before = h.head()
        with pytest.raises(Timeout):
            h.rx.recv(timeout=0)
        assert h.head() - before <= SMALL  # a ring's worth, no more


@pytest.mark.parametrize("impl", IMPLS)
def test_padding_from_the_start_of_the_ring_is_refused(impl: str) -> None:
    refused = pytest.raises(RemoteProtocolError, match="padding record at the start")
    with hostile("pads", impl, SMALL) as h, within(3), refused:
        h.rx.recv(timeout=0.2)


@pytest.mark.parametrize("impl", IMPLS)
def test_a_batch_ends_at_its_deadline(impl: str) -> None:
    with hostile("messages", impl, LARGE) as h, within(3):
        got = h.rx.recv_many(timeout=0.2)
    assert got and set(got) == {b""}


@pytest.mark.parametrize("impl", IMPLS)
def test_a_batch_ends_after_a_ring_full(impl: str) -> None:
    with hostile("messages", impl, SMALL) as h, within(3):
        got = h.rx.recv_many(timeout=0.2)
    assert 1 <= len(got) <= 1 + SMALL // 16 and set(got) == {b""}  # one, and a ring's worth


def _flood_from_a_child(mm: mmap.mmap, base: int, cap: int) -> tuple[int, int, int]:
    """Fork a child that floods the ring at ``base`` of ``mm`` (shared with it) as the
    ``reassemble`` producer above; returns (pid, its "ready/flooding" pipe, a "stop" pipe)."""
    ready_r, ready_w = os.pipe()
    stop_r, stop_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no locks, no threads; only the mapping and the pipes
        try:
            os.close(ready_r)
            os.close(stop_w)
            os.set_blocking(stop_r, False)
            u64 = memoryview(mm)[base : base + L.HEADER_SIZE].cast("Q")
            data = base + L.HEADER_SIZE
            rec = struct.Struct("=IIQ")
            mm[data : data + cap] = rec.pack(0, L.MIDDLE, 0) * (cap // 16)
            rec.pack_into(mm, data, 0, L.FIRST, 1 << 20)
            u64[L.TAIL] = 16
            os.write(ready_w, b"r")
            while u64[L.HEAD] < 16:
                time.sleep(0.001)
            rec.pack_into(mm, data, 0, L.MIDDLE, 0)
            u64[L.TAIL] = u64[L.HEAD] + cap
            os.write(ready_w, b"f")
            end = time.monotonic() + 20
            i = 0
            while i & 1023 or (time.monotonic() < end and not _readable(stop_r)):
                i += 1
                u64[L.TAIL] = u64[L.HEAD] + cap
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(stop_r)
    return pid, ready_r, stop_w


def _readable(fd: int) -> bool:
    try:
        return os.read(fd, 1) != b"x"  # b"": the parent closed it
    except BlockingIOError:
        return False


def test_asyncio_receive_under_endless_fragments_ends_at_its_deadline(
    shm_url: Callable[[], str],
) -> None:
    """The asyncio driver receives with timeout=0 calls between parks; a ring that never
    runs dry must not turn that into an endless loop that holds the event loop."""
    from ipcwire import aio

    async def main() -> None:
        url = shm_url()
        async with await aio.listen(url, codec="bytes") as listener:
            accepting = asyncio.ensure_future(listener.accept(timeout=10))
            client = await aio.connect(url, codec="bytes", timeout=10, capacity=LARGE)
            async with client, await accepting:
                seg = client._link.segment  # type: ignore[attr-defined]
                pid, ready, stop = _flood_from_a_child(seg.mm, seg.offsets[1], LARGE)
                try:
                    assert os.read(ready, 1) == b"r"
                    with pytest.raises(Timeout):  # takes the first fragment
                        await client.recv(timeout=0)
                    assert os.read(ready, 1) == b"f"
                    with within(3), pytest.raises(Timeout):
                        await client.recv(timeout=0.2)
                finally:
                    os.close(stop)
                    os.close(ready)
                    os.waitpid(pid, 0)

    asyncio.run(main())

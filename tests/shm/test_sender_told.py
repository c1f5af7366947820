"""A side that only sends is told why its peer ended, as a receiving side is.

A producer (here the listener, as a data source usually is) blocked sending into a full ring
when its worker's ``with`` block raises: its send is ``ChannelBroken`` naming the worker's
exception type, on both APIs and both ring implementations, and in the same words as the
receive that follows. (It read "the peer closed ..., so nothing more can be sent", as a clean
close, with the blocking API, and "went away ... (its process exited or was killed)" with
asyncio; only a later recv() told the truth.)
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import pytest
from tests._proc import wait_line

import ipcwire
from ipcwire.shm import _layout as L
from ipcwire.shm.blocking import ShmChannel

from ._util import IMPLS

REASON = "ValueError raised while the channel was open"

PRODUCER = textwrap.dedent(
    """
    import asyncio, sys
    import ipcwire, ipcwire.aio

    url, api = sys.argv[1], sys.argv[2]

    def say(what, exc):
        print(f"{what} {type(exc).__name__}: {exc}", flush=True)

    def blocking():
        with ipcwire.listen(url) as lst:
            print("listening", flush=True)
            with lst.accept(timeout=20) as ch:
                try:
                    while True:
                        ch.send(b"x" * 1000, timeout=30)
                except ipcwire.IpcwireError as exc:
                    say("send", exc)
                try:
                    ch.recv(timeout=10)
                except ipcwire.IpcwireError as exc:
                    say("recv", exc)

    async def aio():
        async with await ipcwire.aio.listen(url) as lst:
            print("listening", flush=True)
            async with await lst.accept(timeout=20) as ch:
                try:
                    while True:
                        await ch.send(b"x" * 1000, timeout=30)
                except ipcwire.IpcwireError as exc:
                    say("send", exc)
                try:
                    await ch.recv(timeout=10)
                except ipcwire.IpcwireError as exc:
                    say("recv", exc)

    blocking() if api == "blocking" else asyncio.run(aio())
    """
)


def _wait_until_parked(ch: ShmChannel) -> None:
    """Until the producer waits for room in the (full) server-to-client ring: its
    producer_waiting flag, in the header of ring 1 of the segment this client made. Nothing
    can be waited on for that, so this is a bounded poll of the flag."""
    seg = ch._link.segment
    assert seg is not None
    at = seg.offsets[1] + L.PRODUCER_WAITING * 4
    deadline = time.monotonic() + 20
    while struct.unpack_from("=I", seg.mm, at)[0] == 0:
        assert time.monotonic() < deadline, "the producer never waited for room"
        time.sleep(0.001)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("api", ["blocking", "asyncio"])
def test_a_blocked_sender_is_told_its_workers_failure(
    shm_url: Callable[[], str], api: str, impl: str
) -> None:
    url = shm_url()
    env = {**os.environ, "IPCWIRE_SHM_IMPL": impl}
    proc = subprocess.Popen(
        [sys.executable, "-c", PRODUCER, url, api],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert wait_line(proc) == "listening"
        with pytest.raises(ValueError), ipcwire.connect(url, capacity="4K", timeout=10) as ch:
            assert isinstance(ch, ShmChannel)
            _wait_until_parked(ch)
            raise ValueError("worker bug: secret detail")
        sent, received = wait_line(proc), wait_line(proc)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    who = f"the client of {url}"
    assert sent.startswith(f"send ChannelBroken: {who} ended the channel after an error on its ")
    assert f"({REASON}); nothing more can be sent to it" in sent
    assert received.startswith(f"recv ChannelBroken: {who} ended the channel after an error")
    assert REASON in received
    assert "secret detail" not in sent + received

"""A send that a signal handler's exception (KeyboardInterrupt, a SIGTERM handler's
SystemExit) stops part-way through a message must not leave the stream out of step.

Before: the next send wrote a new frame after the torn one, and the receiver read the new
frame's bytes as the rest of the old message (a tcp receiver waited forever for the 8 MiB it
had been promised, then took later messages as its payload). Now the channel refuses to send
any more (``ChannelBroken`` saying why), the receiver gets no partial message, and a send
stopped before it wrote anything (known exactly on the native path) leaves the channel usable.
The handler raises a test exception on SIGUSR1 rather than KeyboardInterrupt on SIGINT, so
that pytest's own Ctrl-C handling stays out of it; the code path is the same.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

import pytest

import ipcwire
import ipcwire.pipe
from ipcwire.channel import Channel
from ipcwire.errors import ChannelBroken, Timeout

BIG = b"B" * (8 << 20)  # far more than the socket buffers hold: the send blocks part-way


class Interrupted(BaseException):
    """What the test's signal handler raises (as KeyboardInterrupt would be)."""


@contextmanager
def _pair(url: str, codec: str) -> Iterator[tuple[Channel, Channel]]:
    if url == "pipe":
        pa, pb = ipcwire.pipe.pair(codec=codec)
        with pa, pb:
            yield pa, pb
        return
    with ipcwire.listen(url, codec=codec) as lst:
        box: list[Channel] = []
        t = threading.Thread(target=lambda: box.append(lst.accept(timeout=10)))
        t.start()
        a = ipcwire.connect(lst.url, codec=codec, timeout=10)
        t.join()
        with a, box[0] as b:
            yield a, b


def _queued(ch: Channel) -> int:
    """Bytes waiting to be read on ``ch``'s side (FIONREAD)."""
    fd = ch._stream.fileno()  # type: ignore[attr-defined]
    return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])


_SENDS = {1, 7, 20, 44, 46}  # x86_64 write, poll (a pipe's wait for room), writev, sendto, sendmsg


def _sending() -> bool:
    """The main thread is inside a send system call, or polling for room to write."""
    with open(f"/proc/self/task/{os.getpid()}/syscall") as f:
        first = f.read().split()[0]
    return first.isdigit() and int(first) in _SENDS


def _interrupt_send(
    a: Channel, data: object, ready: Callable[[], bool], *, repeat: bool = True
) -> None:
    """Send ``data`` on ``a`` from this (the main) thread, and interrupt it with SIGUSR1
    once ``ready()`` (again every 50 ms with ``repeat``); the handler raises
    :class:`Interrupted` once."""
    fired = threading.Event()
    out = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        if not fired.is_set():
            fired.set()
            raise Interrupted

    def interrupter() -> None:
        give_up = time.monotonic() + 30
        while not ready() and not out.is_set() and time.monotonic() < give_up:
            out.wait(0.005)  # a condition only the kernel knows: polled, briefly
        # A signal that lands just before the thread blocks in the kernel only interrupts
        # the next wait: repeat until the send gave up.
        while not out.is_set():
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)
            if not repeat:
                return
            out.wait(0.05)

    previous = signal.signal(signal.SIGUSR1, handler)
    t = threading.Thread(target=interrupter)
    t.start()
    try:
        with pytest.raises(Interrupted):
            a.send(data)
    finally:
        out.set()
        t.join()
        signal.signal(signal.SIGUSR1, previous)


URLS = {"unix": "unix_url", "tcp": "tcp_url", "pipe": None}


@pytest.mark.usefixtures("impl")
@pytest.mark.parametrize("codec", ["bytes", "json"])
@pytest.mark.parametrize("kind", sorted(URLS))
def test_a_send_interrupted_part_way_breaks_sending_and_delivers_nothing_partial(
    kind: str, codec: str, request: pytest.FixtureRequest
) -> None:
    fixture = URLS[kind]
    url = "pipe" if fixture is None else request.getfixturevalue(fixture)()
    data: object = BIG if codec == "bytes" else BIG.decode()
    with _pair(url, codec) as (a, b):
        _interrupt_send(a, data, lambda: _sending() and _queued(b) > 0)  # part of it is out
        with pytest.raises(ChannelBroken, match="interrupted part-way"):
            a.send(b"after" if codec == "bytes" else "after", timeout=5)
        a.close()
        with pytest.raises(ChannelBroken, match="middle of a message"):
            b.recv(timeout=10)


@pytest.mark.parametrize("codec", ["bytes", "json"])
def test_a_send_interrupted_before_it_wrote_anything_leaves_the_channel_usable(
    codec: str, unix_url: Callable[[], str]
) -> None:
    small: object = b"s" * 1000 if codec == "bytes" else "s" * 1000
    with _pair(unix_url(), codec) as (a, b):
        sent = 0
        while True:  # fill the buffers until a send cannot start
            try:
                a.send(small, timeout=0)
            except Timeout as exc:
                assert "nothing was sent" in str(exc)
                break
            sent += 1
        full = _queued(b)
        big: object = BIG if codec == "bytes" else BIG.decode()
        # The send waits for room without writing a byte: interrupt it there.
        _interrupt_send(a, big, lambda: _sending() and _queued(b) == full)
        box: list[object] = []
        reader = threading.Thread(
            target=lambda: box.extend(b.recv(timeout=10) for _ in range(sent + 1))
        )
        reader.start()
        a.send(b"after" if codec == "bytes" else "after", timeout=10)
        reader.join()
        assert box[:sent] == [small] * sent
        assert box[sent] == (b"after" if codec == "bytes" else "after")


@pytest.mark.usefixtures("impl")
def test_ctrl_c_stops_a_send_to_a_slow_reader_without_waiting_for_the_whole_message(
    unix_url: Callable[[], str],
) -> None:
    """The reader keeps taking a little at a time, so every write makes progress and none is
    interrupted: the handler of the one signal must still run between writes (the native
    sender waited until the reader had taken all 60 MiB, ~7 s)."""
    with _pair(unix_url(), "bytes") as (a, b):
        sock = b._stream.sock  # type: ignore[attr-defined]
        stop = threading.Event()
        taken = [0]

        def slow_reader() -> None:
            while not stop.is_set():
                try:
                    taken[0] += len(sock.recv(16384, socket.MSG_DONTWAIT))
                except BlockingIOError:
                    pass
                stop.wait(0.002)  # pacing the reader (8 MB/s), not a synchronisation

        r = threading.Thread(target=slow_reader)
        r.start()
        try:
            _interrupt_send(
                a, b"z" * (60 << 20), lambda: _sending() and taken[0] > 4 << 20, repeat=False
            )
            assert taken[0] < 30 << 20, f"the send went on until the reader took {taken[0]} B"
        finally:
            stop.set()
            r.join()

"""FIFOs on both paths of the fd channels: the C receiver (``_ext/stream.c`` in fd mode),
enabled once a FIFO's first writer was seen and then reading before every wait, and the
Python paths. The receives here have no timeout (that is when the C path runs); each runs in
a thread joined with a bound, so a lost wake-up fails the test instead of hanging it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests._threads import finished, in_thread

import ipcwire
from ipcwire.errors import EndOfChannel


def test_both_ways_without_timeouts(impl: str, tmp_path: Path) -> None:
    url = f"fifo://{tmp_path}/in.fifo?reply={tmp_path}/out.fifo"
    sizes = [0, 1, 64, 4092, 4093, 70_000]

    def client() -> int:
        with ipcwire.connect(url, codec="bytes", timeout=20) as ch:
            for i in range(60):
                msg = bytes([i]) * sizes[i % len(sizes)]
                ch.send(msg)
                assert ch.recv() == msg
            return 60

    with ipcwire.listen(url, codec="bytes") as listener:
        t, box = in_thread(client)
        with listener.accept(timeout=20) as ch:
            for _ in range(60):
                ch.send(ch.recv())
            assert (getattr(ch, "_fast_recv", None) is not None) is (impl == "c")
            assert ch.statistics().messages_received == 60
        assert finished(t)
        assert box == [60]


def test_a_writer_that_left_before_the_session_then_the_end(impl: str, tmp_path: Path) -> None:
    # The shell writes while no session is open (the listener keeps the FIFO open) and leaves:
    # the next session reads its message and then the end, though poll reports no hang-up
    # for a writer that left before this end was opened: reads must come first.
    path = tmp_path / "w.fifo"
    with ipcwire.listen(f"fifo://{path}", codec="bytes") as listener:
        with ipcwire.connect(f"fifo://{path}", codec="bytes", timeout=20) as w:
            w.send(b"first session")
        with listener.accept(timeout=20) as reader:
            assert reader.recv(timeout=20) == b"first session"
            t, box = in_thread(reader.recv)
            assert finished(t)
            assert isinstance(box[0], EndOfChannel)
        subprocess.run(["sh", "-c", f"printf '\\000\\000\\000\\002hi' > {path}"], check=True)
        with listener.accept(timeout=20) as reader:
            t, box = in_thread(reader.recv)
            assert finished(t)
            assert box == [b"hi"]
            t, box = in_thread(reader.recv)
            assert finished(t)
            assert isinstance(box[0], EndOfChannel)


def test_a_short_send_waits_while_another_writer_holds_the_fifo(impl: str, tmp_path: Path) -> None:
    # Another writer holds the FIFO's exclusive flock: it is in the middle of a message over
    # PIPE_BUF, which the kernel may split. A short message without a timeout takes the C
    # sender, which must take the shared flock too (declining while it cannot, so that the
    # Python path waits its turn), or it lands in the gap inside the other's message.
    import fcntl
    import os
    import struct

    path = tmp_path / "w.fifo"
    with (
        ipcwire.listen(f"fifo://{path}", codec="bytes") as listener,
        listener.accept() as reader,
        ipcwire.connect(f"fifo://{path}", codec="bytes") as b,
    ):
        other = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        try:
            fcntl.flock(other, fcntl.LOCK_EX)
            fast = getattr(b, "_fast_send", None)
            assert (fast is not None) is (impl == "c")
            if fast is not None:
                assert fast(b"B" * 100) is False  # declined, nothing written
            t, _ = in_thread(lambda: b.send(b"B" * 100))
            os.write(other, struct.pack(">I", 5) + b"first")
            fcntl.flock(other, fcntl.LOCK_UN)
            assert reader.recv(timeout=20) == b"first"
            assert reader.recv(timeout=20) == b"B" * 100
            assert finished(t)
        finally:
            os.close(other)

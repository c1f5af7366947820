"""Named pipes with real processes: creation rules, open deadlines, EOF, several writers."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from tests._threads import finished, in_thread

import ipcwire
from ipcwire import aio
from ipcwire.errors import (
    AddressInUse,
    ChannelBroken,
    ConfigurationError,
    ConnectionRefused,
    EndOfChannel,
    InvalidURL,
    PermissionDenied,
    Timeout,
)

SRC = str(Path(__file__).resolve().parents[2] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC}


def test_created_0600_whatever_the_umask_and_removed_on_close(tmp_path: Path) -> None:
    path = tmp_path / "a.fifo"
    old = os.umask(0)
    try:
        listener = ipcwire.listen(f"fifo://{path}")
    finally:
        os.umask(old)
    st = path.stat()
    assert stat.S_ISFIFO(st.st_mode)
    assert st.st_mode & 0o777 == 0o600
    listener.close()
    assert not path.exists()


def test_existing_fifo_is_used_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "mine.fifo"
    os.mkfifo(path, 0o600)
    url = f"fifo://{path}"
    with (
        ipcwire.listen(url, framing="ndjson") as listener,
        listener.accept() as ch,
        ipcwire.connect(url, framing="ndjson") as w,
    ):
        w.send({"a": 1})
        assert ch.recv(timeout=5) == {"a": 1}
    assert path.exists()  # not ours to remove


def test_an_existing_fifo_of_another_owner_or_a_wider_mode_is_refused(tmp_path: Path) -> None:
    # A FIFO planted in a shared directory: whoever owns it decides who may read it (and
    # take the messages) or write it (and inject them). It is refused and left as it is.
    wide = tmp_path / "wide.fifo"
    os.mkfifo(wide)
    os.chmod(wide, 0o666)
    with pytest.raises(PermissionDenied, match="mode 0o666"):
        ipcwire.listen(f"fifo://{wide}")
    with pytest.raises(PermissionDenied, match="mode 0o666"):
        asyncio.run(aio.listen(f"fifo://{tmp_path}/in.fifo?reply={wide}"))
    assert not (tmp_path / "in.fifo").exists()  # created for the attempt, removed again
    with ipcwire.listen(f"fifo://{wide}", mode=0o666):  # meant: fine
        pass
    if os.geteuid() != 0:
        return  # only root can give a file to another user
    foreign = tmp_path / "foreign.fifo"
    os.mkfifo(foreign, 0o600)
    os.chown(foreign, 65534, 65534)
    with pytest.raises(PermissionDenied, match="owned by uid 65534"):
        ipcwire.listen(f"fifo://{foreign}")
    assert wide.exists()
    assert foreign.exists()


@pytest.mark.parametrize("kind", ["file", "dir", "socket"])
def test_a_path_that_is_not_a_fifo_is_never_clobbered(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "thing"
    if kind == "file":
        path.write_text("precious")
    elif kind == "dir":
        path.mkdir()
    else:
        import socket

        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()
    with pytest.raises(AddressInUse, match="not a FIFO"):
        ipcwire.listen(f"fifo://{path}")
    with pytest.raises(ConnectionRefused, match="not a FIFO"):
        ipcwire.connect(f"fifo://{path}", timeout=0.1)
    assert path.exists()
    if kind == "file":
        assert path.read_text() == "precious"


def test_opens_never_hang_past_their_timeout(tmp_path: Path) -> None:
    path = tmp_path / "lonely.fifo"
    with pytest.raises(ConnectionRefused, match="no FIFO"):
        ipcwire.connect(f"fifo://{path}", timeout=0.1)
    os.mkfifo(path, 0o600)  # a FIFO, but nobody reads it
    start = time.monotonic()
    with pytest.raises(ConnectionRefused, match="nobody has"):
        ipcwire.connect(f"fifo://{path}", timeout=0.3)
    assert 0.25 < time.monotonic() - start < 3
    with ipcwire.listen(f"fifo://{path}") as listener, listener.accept() as reader:
        start = time.monotonic()
        with pytest.raises(Timeout):  # no writer yet: waits, boundedly; not end of stream
            reader.recv(timeout=0.3)
        assert 0.25 < time.monotonic() - start < 3


def test_accept_refuses_a_nan_timeout_with_both_apis(tmp_path: Path) -> None:
    """With reply=, the blocking accept(timeout=nan) waited for a client for ever (its deadline
    never passed); asyncio's refused it. Both say ConfigurationError now, in either mode."""
    for url in (f"fifo://{tmp_path}/a.fifo", f"fifo://{tmp_path}/b.fifo?reply={tmp_path}/r.fifo"):
        with ipcwire.listen(url) as lst:
            t, box = in_thread(lambda: lst.accept(timeout=float("nan")))
            assert finished(t, 10), "accept(timeout=nan) hung"
            assert isinstance(box[0], ConfigurationError), box

        async def main() -> None:
            async with await aio.listen(url) as lst:  # noqa: B023
                with pytest.raises(ConfigurationError, match="nan"):
                    await lst.accept(timeout=float("nan"))

        asyncio.run(main())


def test_writers_in_other_processes_and_eof_when_they_leave(tmp_path: Path) -> None:
    path = tmp_path / "w.fifo"
    url = f"fifo://{path}"
    code = (
        "import sys, ipcwire\n"
        "with ipcwire.connect(sys.argv[1], framing='ndjson') as ch:\n"
        "    print('connected', flush=True)\n"
        "    sys.stdin.readline()\n"
        "    ch.send({'from': int(sys.argv[2])})\n"
    )
    shell = ["sh", "-c", f'echo \'{{"from": "sh"}}\' > {path}']
    with ipcwire.listen(url, framing="ndjson") as listener:
        with listener.accept() as reader:
            procs = [
                subprocess.Popen(
                    [sys.executable, "-c", code, url, str(i)],
                    env=ENV,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for i in range(3)
            ]
            for p in procs:  # all three hold the FIFO open...
                assert p.stdout is not None
                assert p.stdout.readline().strip() == "connected"
            subprocess.run(shell, check=True)  # ...while the shell writes and leaves
            for p in procs:
                p.communicate("go\n", timeout=20)
                assert p.returncode == 0
            got = [reader.recv(timeout=20) for _ in range(4)]
            assert sorted(str(m["from"]) for m in got) == ["0", "1", "2", "sh"]
            with pytest.raises(EndOfChannel):  # every writer that came has left
                reader.recv(timeout=20)
            with pytest.raises(Timeout, match="one reader"):
                listener.accept(timeout=0.05)
        # Between two sessions the listener keeps the FIFO open: nothing written is lost.
        subprocess.run(shell, check=True)
        with listener.accept() as reader:
            assert reader.recv(timeout=20) == {"from": "sh"}


def test_serve_handles_one_writer_session_after_another(tmp_path: Path) -> None:
    url = f"fifo://{tmp_path}/s.fifo"
    seen: list[object] = []
    sessions = threading.Semaphore(0)

    def handle(ch: ipcwire.Channel) -> None:
        seen.extend(ch)  # until the session's writers leave
        sessions.release()

    with ipcwire.listen(url, framing="ndjson") as listener:
        server = threading.Thread(target=listener.serve, args=(handle,))
        server.start()
        for i in range(3):
            with ipcwire.connect(url, framing="ndjson") as w:
                w.send({"session": i})
            assert sessions.acquire(timeout=20)
        listener.close()
        server.join(20)
        assert not server.is_alive()
    assert seen == [{"session": 0}, {"session": 1}, {"session": 2}]


WRITER = """
import sys, ipcwire
url, tag, n, size = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3]), int(sys.argv[4])
with ipcwire.connect(url, timeout=20) as ch:
    for i in range(n):
        ch.send(tag * size)
"""


def test_many_writers_big_messages_never_interleave(tmp_path: Path) -> None:
    # Messages 16x PIPE_BUF from four processes at once: the flock keeps each one whole.
    url = f"fifo://{tmp_path}/big.fifo"
    size, n = 64 * 1024, 40
    with ipcwire.listen(url) as listener:
        procs = [
            subprocess.Popen([sys.executable, "-c", WRITER, url, tag, str(n), str(size)], env=ENV)
            for tag in "ABCD"
        ]
        counts: dict[bytes, int] = {}
        reader = listener.accept()
        while sum(counts.values()) < 4 * n:
            try:
                msg = reader.recv(timeout=30)
            except EndOfChannel:  # all writers of that moment left: the next session
                reader.close()
                reader = listener.accept()
                continue
            assert len(msg) == size
            assert msg == msg[:1] * size, "two writers' bytes interleaved"
            counts[msg[:1]] = counts.get(msg[:1], 0) + 1
        reader.close()
        for p in procs:
            assert p.wait(30) == 0
    assert counts == {b"A": n, b"B": n, b"C": n, b"D": n}


def test_reader_gone_is_broken_pipe_for_the_writer(tmp_path: Path) -> None:
    url = f"fifo://{tmp_path}/r.fifo"
    listener = ipcwire.listen(url)
    reader = listener.accept()
    writer = ipcwire.connect(url)
    writer.send(b"hello")
    assert reader.recv(timeout=5) == b"hello"
    reader.close()
    listener.close()  # the last reader: the FIFO now has none
    with pytest.raises(ChannelBroken, match="broken pipe"):
        for _ in range(10):
            writer.send(b"x" * 100_000, timeout=5)
    writer.close()


def test_both_ways_with_a_reply_fifo_and_token(tmp_path: Path) -> None:
    url = f"fifo://{tmp_path}/in.fifo?reply={tmp_path}/out.fifo"
    code = (
        "import sys, ipcwire\n"
        "with ipcwire.connect(sys.argv[1], codec='json', token='t0k', timeout=20) as ch:\n"
        "    print(ch.request({'q': 1}, timeout=20), flush=True)\n"
    )
    with ipcwire.listen(url, codec="json", token="t0k") as listener:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, url], env=ENV, stdout=subprocess.PIPE, text=True
        )
        with listener.accept(timeout=20) as ch:
            assert ch.recv(timeout=20) == {"q": 1}
            ch.send({"a": 2})
        out, _ = proc.communicate(timeout=20)
        assert out.strip() == "{'a': 2}"
    with pytest.raises(ConfigurationError, match="reply="):
        ipcwire.listen(f"fifo://{tmp_path}/x.fifo", token="t0k")


def test_bad_fifo_urls() -> None:
    with pytest.raises(InvalidURL, match="three slashes"):
        ipcwire.listen("fifo://relative/path")
    with pytest.raises(InvalidURL, match="absolute"):
        ipcwire.listen("fifo:relative")


def test_asyncio_reader_and_writer(tmp_path: Path) -> None:
    url = f"fifo://{tmp_path}/aio.fifo"

    async def main() -> None:
        async with await aio.listen(url) as listener:
            reader = await listener.accept()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", WRITER, url, "Q", "5", str(100_000), env=ENV
            )
            for _ in range(5):
                assert await reader.recv(timeout=20) == b"Q" * 100_000
            assert await proc.wait() == 0
            with pytest.raises(EndOfChannel):
                await reader.recv(timeout=20)
            await reader.aclose()
        with pytest.raises(ConnectionRefused):
            await aio.connect(url, timeout=0.1)

    asyncio.run(main())


def test_with_reply_a_second_client_waits_its_turn_and_never_takes_replies(
    tmp_path: Path,
) -> None:
    url = f"fifo://{tmp_path}/in.fifo?reply={tmp_path}/out.fifo"
    with ipcwire.listen(url, codec="json") as listener, ipcwire.connect(url, codec="json") as a:
        with pytest.raises(ConnectionRefused, match="another client"):
            ipcwire.connect(url, codec="json", timeout=0.2)
        with listener.accept(timeout=10) as ch:
            a.send({"from": "a"})
            assert ch.recv(timeout=10) == {"from": "a"}
            ch.send({"to": "a"})
            assert a.recv(timeout=10) == {"to": "a"}
        a.close()
        accepted: list[Any] = []
        t = threading.Thread(target=lambda: accepted.append(listener.accept(timeout=10)))
        t.start()
        with ipcwire.connect(url, codec="json") as b:  # a left: b's turn
            t.join()
            with accepted[0] as ch:
                b.send({"from": "b"})
                assert ch.recv(timeout=10) == {"from": "b"}

    async def main() -> None:
        async with await aio.listen(url, codec="json") as listener:
            a = await aio.connect(url, codec="json")
            with pytest.raises(ConnectionRefused, match="another client"):
                await aio.connect(url, codec="json", timeout=0.2)
            ch = await listener.accept(timeout=10)
            await a.send({"from": "a"})
            assert await ch.recv(timeout=10) == {"from": "a"}
            await ch.aclose()
            await a.aclose()
            accepting = asyncio.ensure_future(listener.accept(timeout=10))
            b = await aio.connect(url, codec="json")  # a left: b's turn
            ch = await accepting
            await b.send({"from": "b"})
            assert await ch.recv(timeout=10) == {"from": "b"}
            await ch.aclose()
            await b.aclose()

    asyncio.run(main())


def _pipe_is_full(fd: int) -> bool:
    """True once the FIFO holds as many bytes as it can (a writer is blocked on it)."""
    import array
    import fcntl
    import termios

    size = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    queued = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, queued)
    return queued[0] >= size


def test_a_short_message_never_lands_inside_another_writers_long_one(tmp_path: Path) -> None:
    # A writes 4 MiB: the kernel splits it when the FIFO is full, and A waits there holding
    # its lock. B's short messages must wait for A's message to end, not fill the gap.
    from tests._proc import wait_until
    from tests._threads import finished, in_thread

    url = f"fifo://{tmp_path}/w.fifo"
    long = b"A" * (4 << 20)
    probe: list[int] = []  # an fd on the FIFO that never reads: to see how full it is
    with (
        ipcwire.listen(url, codec="bytes") as listener,
        listener.accept() as reader,
        ipcwire.connect(url, codec="bytes") as a,
        ipcwire.connect(url, codec="bytes") as b,
    ):
        probe.append(os.open(tmp_path / "w.fifo", os.O_RDONLY | os.O_NONBLOCK))
        ta, _ = in_thread(lambda: a.send(long, timeout=30))
        assert wait_until(lambda: _pipe_is_full(probe[0]), 20)
        tb, _ = in_thread(lambda: [b.send(b"B" * 100, timeout=30) for _ in range(50)])
        got = [reader.recv(timeout=20) for _ in range(51)]
        assert finished(ta)
        assert finished(tb)
    os.close(probe[0])
    assert got[0] == long
    assert got[1:] == [b"B" * 100] * 50

    async def main() -> None:
        # asyncio writers; the reader is blocking (an asyncio reader reads ahead, so the FIFO
        # would not fill), called from a thread
        with ipcwire.listen(url, codec="bytes") as listener, listener.accept() as reader:
            probe[0] = os.open(tmp_path / "w.fifo", os.O_RDONLY | os.O_NONBLOCK)
            a = await aio.connect(url, codec="bytes")
            b = await aio.connect(url, codec="bytes")
            sa = asyncio.ensure_future(a.send(long, timeout=30))
            while not _pipe_is_full(probe[0]):  # the OS shows it only by polling
                await asyncio.sleep(0.001)
            sb = asyncio.ensure_future(b.send_many([b"B" * 100] * 50, timeout=30))
            got = [await asyncio.to_thread(reader.recv, timeout=20) for _ in range(51)]
            await sa
            await sb
            await a.aclose()
            await b.aclose()
            os.close(probe[0])
        assert got[0] == long
        assert got[1:] == [b"B" * 100] * 50

    asyncio.run(main())


def test_with_reply_the_next_client_waits_for_the_session_before_to_close(
    tmp_path: Path,
) -> None:
    # B's turn comes when A closes, but the listener's session for A is still open: B must
    # not write into A's session, nor read the reply A left unread.
    from tests._threads import finished, in_thread

    url = f"fifo://{tmp_path}/in.fifo?reply={tmp_path}/out.fifo"
    with ipcwire.listen(url, codec="json") as listener:
        ta, accepted = in_thread(lambda: listener.accept(timeout=10))
        a = ipcwire.connect(url, codec="json")
        assert finished(ta)
        s1 = accepted[0]
        tb, connected = in_thread(lambda: ipcwire.connect(url, codec="json", timeout=20))
        a.send({"q": "a"})
        assert s1.recv(timeout=10) == {"q": "a"}
        s1.send({"r": "for a"})
        assert a.recv(timeout=10) == {"r": "for a"}
        s1.send({"r": "late, for a"})
        a.close()
        with pytest.raises(EndOfChannel):  # B is not a writer of A's session
            s1.recv(timeout=10)
        s1.close()
        t2, accepted = in_thread(lambda: listener.accept(timeout=10))
        assert finished(tb)
        assert finished(t2)
        with connected[0] as b, accepted[0] as s2:
            b.send({"q": "b"})
            assert s2.recv(timeout=10) == {"q": "b"}
            s2.send({"r": "for b"})
            assert b.recv(timeout=10) == {"r": "for b"}

    async def main() -> None:
        async with await aio.listen(url, codec="json") as listener:
            accepting = asyncio.ensure_future(listener.accept(timeout=10))
            a = await aio.connect(url, codec="json")
            s1 = await accepting
            b_connecting = asyncio.ensure_future(aio.connect(url, codec="json", timeout=20))
            await s1.send({"r": "late, for a"})
            await a.aclose()
            with pytest.raises(EndOfChannel):
                await s1.recv(timeout=10)
            await s1.aclose()
            accepting = asyncio.ensure_future(listener.accept(timeout=10))
            b = await b_connecting
            s2 = await accepting
            await b.send({"q": "b"})
            assert await s2.recv(timeout=10) == {"q": "b"}
            await s2.send({"r": "for b"})
            assert await b.recv(timeout=10) == {"r": "for b"}
            await b.aclose()
            await s2.aclose()

    asyncio.run(main())


def test_with_reply_accept_keeps_one_deadline_for_the_session_before_and_the_client(
    tmp_path: Path,
) -> None:
    """accept(timeout=1) waits for the session before to close, then for a client, within the
    same second: asyncio's gave each wait the whole timeout (1.9 s here) and said 'no writer
    opened', where the blocking one says 'no client connected to'."""
    url = f"fifo://{tmp_path}/in.fifo?reply={tmp_path}/out.fifo"
    with ipcwire.listen(url) as listener:
        t, accepted = in_thread(lambda: listener.accept(timeout=10))
        with ipcwire.connect(url):
            assert finished(t)
        session = accepted[0]
        threading.Timer(0.9, session.close).start()
        start = time.monotonic()
        with pytest.raises(Timeout, match="no client connected to"):
            listener.accept(timeout=1)
        # (a deadline restarted when the session closed would end at 1.9 s; a busy second
        # core can delay the Timeout itself by some tenths)
        assert time.monotonic() - start < 1.8

    async def main() -> None:
        async with await aio.listen(url) as listener:
            accepting = asyncio.ensure_future(listener.accept(timeout=10))
            async with await aio.connect(url):
                session = await accepting
            asyncio.get_running_loop().call_later(0.9, session.close)
            start = time.monotonic()
            with pytest.raises(Timeout, match="no client connected to"):
                await listener.accept(timeout=1)
            assert time.monotonic() - start < 1.8

    asyncio.run(main())


def test_a_send_waiting_for_another_writer_says_so_with_both_apis(tmp_path: Path) -> None:
    """A writer holding the FIFO (its flock, as while it writes a long message) past a send's
    timeout: the blocking Timeout said 'the peer is not reading and the buffers are full',
    which was not the reason; both APIs now name the other writer, and nothing was sent."""
    import fcntl

    url = f"fifo://{tmp_path}/in.fifo"
    with ipcwire.listen(url) as listener, listener.accept() as reader:
        other = os.open(tmp_path / "in.fifo", os.O_WRONLY | os.O_NONBLOCK)
        try:
            fcntl.flock(other, fcntl.LOCK_EX)
            with ipcwire.connect(url) as writer:
                for size in (10, 10_000):  # a short message (shared lock) and a long one
                    with pytest.raises(Timeout, match=r"another writer held .* nothing was sent"):
                        writer.send(b"x" * size, timeout=0.1)

            async def main() -> None:
                async with await aio.connect(url) as writer:
                    for size in (10, 10_000):
                        with pytest.raises(Timeout, match=r"another writer held .* nothing was"):
                            await writer.send(b"x" * size, timeout=0.1)

            asyncio.run(main())
        finally:
            os.close(other)  # (and its lock)
        with ipcwire.connect(url) as writer:
            writer.send(b"after")
        assert reader.recv(timeout=10) == b"after"  # nothing of the timed-out sends came

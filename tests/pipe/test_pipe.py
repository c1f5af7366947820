"""Anonymous pipes across fork, subprocess and multiprocessing; directions, ends, errors."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from tests._loops import AioRun

import ipcwire
from ipcwire import pipe
from ipcwire.errors import (
    ChannelBroken,
    ChannelClosed,
    ConfigurationError,
    EndOfChannel,
    InvalidURL,
    LocalProtocolError,
    Timeout,
)

SRC = str(Path(__file__).resolve().parents[2] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC}


def test_ends_are_close_on_exec() -> None:
    a, b = pipe.ends()
    for fd in a.fds + b.fds:
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    a.close()
    b.close()


def test_across_fork() -> None:
    parent_end, child_end = pipe.ends()
    pid = os.fork()
    if pid == 0:  # the child: close the parent's end, answer, exit
        code = 1
        try:
            parent_end.close()
            with child_end.open(codec="json") as ch:
                msg = ch.recv(timeout=10)
                ch.send({"pid": os.getpid(), "echo": msg})
                code = 0
        finally:
            os._exit(code)
    child_end.close()
    with parent_end.open(codec="json") as ch:
        ch.send({"hello": 1})
        assert ch.recv(timeout=10) == {"pid": pid, "echo": {"hello": 1}}
        with pytest.raises(EndOfChannel):
            ch.recv(timeout=10)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_across_subprocess_with_pass_fds() -> None:
    parent_end, child_end = pipe.ends()
    code = "import sys, ipcwire\nch = ipcwire.connect(sys.argv[1])\nch.send(ch.recv(timeout=10))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, child_end.url_with(codec="msgpack", framing="length")],
        pass_fds=child_end.fds,
        env=ENV,
    )
    child_end.close()
    with parent_end.open(codec="msgpack") as ch:
        ch.send({"blob": b"\x00" * 100_000})
        assert ch.recv(timeout=10) == {"blob": b"\x00" * 100_000}
        with pytest.raises(EndOfChannel):
            ch.recv(timeout=10)
    assert proc.wait(10) == 0


def test_a_child_that_was_not_given_the_fds_cannot_use_them() -> None:
    parent_end, child_end = pipe.ends()
    code = "import sys, ipcwire\nipcwire.connect(sys.argv[1])"
    out = subprocess.run(
        [sys.executable, "-c", code, child_end.url],
        env=ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode != 0
    assert "InvalidURL" in out.stderr
    assert "pass_fds" in out.stderr
    parent_end.close()
    child_end.close()


def _mp_worker(end: pipe.PipeEnd) -> None:
    with end.open(codec="json") as ch:
        for msg in ch:
            ch.send(msg * 2)


def test_across_multiprocessing_spawn(monkeypatch: pytest.MonkeyPatch) -> None:
    # The end is pickled into a fresh interpreter (its fds duplicated over), which imports
    # this module to find the worker: make the tests directory importable there.
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    parent_end, child_end = pipe.ends()
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_mp_worker, args=(child_end,))
    proc.start()
    child_end.close()
    with parent_end.open(codec="json") as ch:
        assert ch.request(21, timeout=20) == 42
    proc.join(20)
    assert proc.exitcode == 0


def test_one_way_pipe_directions() -> None:
    sender, receiver = pipe.pair(duplex=False, codec="json")
    with sender, receiver:
        sender.send([1, 2])
        assert receiver.recv(timeout=5) == [1, 2]
        with pytest.raises(LocalProtocolError, match="sending end"):
            sender.recv(timeout=0)
        with pytest.raises(LocalProtocolError, match="receiving end"):
            receiver.send([3])
    w, r = pipe.ends(duplex=False)
    with pytest.raises(ConfigurationError, match="one-way"):
        w.open(token="secret")
    r.close()


def test_a_token_refused_on_a_one_way_end_closes_its_fd_with_both_apis(aio_run: AioRun) -> None:
    """The end was taken over (it cannot be closed any more): the refusal closes its fd. The
    asyncio one left it open, so the writer's messages went into a pipe nobody would read."""

    async def aopen(end: pipe.PipeEnd) -> object:
        return await end.aopen(token="secret")

    def blocking(end: pipe.PipeEnd) -> object:
        return end.open(token="secret")

    def asyncio_(end: pipe.PipeEnd) -> object:
        return aio_run(aopen(end))

    for opener in (blocking, asyncio_):
        w, r = pipe.ends(duplex=False)
        with pytest.raises(ConfigurationError, match="one-way"):
            opener(r)
        with w.open() as writer, pytest.raises(ChannelBroken, match="broken pipe"):
            writer.send(b"to nobody")  # the only read end is closed


def test_peer_gone_gives_end_then_broken_pipe() -> None:
    a, b = pipe.pair()
    a.send(b"last")
    a.close()
    assert b.recv(timeout=5) == b"last"
    with pytest.raises(EndOfChannel):
        b.recv(timeout=5)
    with pytest.raises(ChannelBroken, match="broken pipe"):  # never SIGPIPE
        b.send(b"to nobody")
    b.close()


def test_peer_dies_mid_message_is_broken_not_partial() -> None:
    a, b = pipe.ends()
    with b.open() as ch:
        assert a.wfd is not None
        os.write(a.wfd, b"\x00\x00\x01\x00half a message")
        a.close()
        with pytest.raises(ChannelBroken, match="middle of a message"):
            ch.recv(timeout=5)


def test_both_sides_writing_first_cannot_deadlock() -> None:
    a, b = pipe.pair()
    big = b"y" * (8 << 20)  # far more than the pipe holds, each way
    errors: list[BaseException] = []

    def other() -> None:
        try:
            b.send(big, timeout=30)
            assert b.recv(timeout=30) == big
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    a.send(big, timeout=30)  # both send before either receives
    assert a.recv(timeout=30) == big
    t.join(30)
    assert not errors
    a.close()
    b.close()


def test_timeouts_and_close_wake_blocked_calls() -> None:
    a, b = pipe.pair()
    with pytest.raises(Timeout):
        b.recv(timeout=0.05)
    results: list[BaseException] = []
    started = threading.Event()

    def blocked_send() -> None:
        started.set()
        try:
            a.send(b"z" * (32 << 20))  # nobody reads: blocks
        except BaseException as exc:
            results.append(exc)

    t = threading.Thread(target=blocked_send)
    t.start()
    started.wait()
    a.close()
    t.join(10)
    assert not t.is_alive()
    assert isinstance(results[0], ChannelClosed)
    b.close()


def test_pipe_urls() -> None:
    with pytest.raises(InvalidURL, match="names no fds"):
        ipcwire.connect("pipe:")
    with pytest.raises(InvalidURL, match="not open"):
        ipcwire.connect("pipe:?rfd=987")
    with pytest.raises(ConfigurationError, match="no name to listen on"):
        ipcwire.listen("pipe:")
    end, other = pipe.ends()
    with end.open() as ch, pytest.raises(ChannelClosed, match="opens once"):
        end.open()
    assert ch.closed
    other.close()


def test_end_opens_once_and_pickles_only_open() -> None:
    a, b = pipe.ends()
    a.close()
    with pytest.raises(ChannelClosed):
        a.open()
    b.close()


VANISHING = (
    "import os, sys, ipcwire\nch = ipcwire.connect(sys.argv[1])\nch.recv(timeout=10)\nos._exit(0)"
)
BIG = {"blob": "z" * 5_000_000}  # far over a pipe's 64 KiB: the sends outlive the worker


def _vanishing_worker() -> tuple[pipe.PipeEnd, subprocess.Popen[bytes]]:
    """A worker that takes one message and exits (os._exit: no goodbye)."""
    parent_end, child_end = pipe.ends()
    proc = subprocess.Popen(
        [sys.executable, "-c", VANISHING, child_end.url_with(codec="json")],
        pass_fds=child_end.fds,
        env=ENV,
    )
    child_end.close()
    return parent_end, proc


def test_recv_after_a_send_the_vanished_peer_broke_is_its_end() -> None:
    """The parent's send raises ChannelBroken (broken pipe); the read side ended with the end
    of stream, so the next recv() is EndOfChannel (as on asyncio, below)."""
    parent_end, proc = _vanishing_worker()
    with parent_end.open(codec="json") as ch:
        ch.send({"op": "first"})
        with pytest.raises(ChannelBroken, match="broken pipe"):
            for _ in range(5):
                ch.send(BIG, timeout=10)
        with pytest.raises(EndOfChannel):
            ch.recv(timeout=10)
    proc.wait(10)


def test_asyncio_recv_after_a_send_the_vanished_peer_broke_is_its_end(aio_run: AioRun) -> None:
    """The next recv() said ChannelBroken ("broke while receiving from it: ... broken pipe")
    where the blocking API says EndOfChannel (found by a newcomer walkthrough)."""
    parent_end, proc = _vanishing_worker()

    async def main() -> None:
        async with await parent_end.aopen(codec="json") as ch:
            await ch.send({"op": "first"})
            with pytest.raises(ChannelBroken, match="broken pipe"):
                for _ in range(5):
                    await ch.send(BIG, timeout=10)
            with pytest.raises(EndOfChannel):
                await ch.recv(timeout=10)

    aio_run(main())
    proc.wait(10)

"""ipcwire.aio.spawn(): the same guarantees as the blocking API, driven by the event loop."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from ipcwire import aio
from ipcwire.errors import ChannelBroken, EndOfChannel, FrameTooLarge
from ipcwire.spawn.aio import AioSpawnChannel

from ._util import alive, group, py, reaped, wait_dead

SRC = str(Path(__file__).resolve().parents[2] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC}


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro(), 60))


def assert_gone(ch: AioSpawnChannel) -> None:
    assert reaped(ch.pid)
    assert group(ch.pid) == []


def test_json_lines_and_a_clean_exit() -> None:
    async def main() -> None:
        child = py(
            """
            import ipcwire
            ch = ipcwire.stdio()
            print("stray")
            for msg in ch:
                ch.send({"echo": msg})
            """
        )
        lines: list[str] = []
        async with await aio.spawn(child, env=ENV, stderr=lines.append) as ch:
            assert await ch.request({"n": 1}, timeout=10) == {"echo": {"n": 1}}
        assert ch.returncode == 0
        assert "stray" in lines
        assert_gone(ch)

    run(main)


def test_100_mb_each_way_in_one_task() -> None:
    async def main() -> None:
        chunk = os.urandom(1 << 20)
        async with await aio.spawn(["cat"], framing="length", codec="bytes") as ch:
            for _ in range(100):
                await ch.send(chunk, timeout=30)
            digest = hashlib.sha256()
            for _ in range(100):
                digest.update(await ch.recv(timeout=30))
            assert digest.digest() == hashlib.sha256(chunk * 100).digest()

    run(main)


def test_stderr_flood_is_drained_by_the_loop() -> None:
    async def main() -> None:
        child = py(
            """
            import sys
            for i in range(1024):
                sys.stderr.write("e" * 1000 + "\\n")
            sys.stderr.flush()
            print('{"done": true}', flush=True)
            """
        )
        lines: list[str] = []
        async with await aio.spawn(child, stderr=lines.append) as ch:
            assert await ch.recv(timeout=20) == {"done": True}
        assert len(lines) == 1024

    run(main)


def test_ladder_child_ignores_sigterm() -> None:
    async def main() -> None:
        child = py(
            """
            import signal, threading
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print('{"ready": true}', flush=True)
            threading.Event().wait()
            """
        )
        ch = await aio.spawn(child, exit_timeout=0.3, term_timeout=0.3)
        assert await ch.recv(timeout=10) == {"ready": True}
        start = time.monotonic()
        await ch.aclose()
        assert time.monotonic() - start < 0.3 + 0.3 + 2.0 + 1.0
        assert ch.returncode == -signal.SIGKILL
        assert_gone(ch)

    run(main)


def test_grandchild_holding_the_pipes() -> None:
    async def main() -> None:
        child = ["sh", "-c", 'sleep 3600 & echo "{\\"g\\": $!}"; exit 0']
        ch = await aio.spawn(child, exit_timeout=0.3, term_timeout=0.5)
        grandchild = (await ch.recv(timeout=10))["g"]
        with pytest.raises(EndOfChannel, match="exited with code 0"):
            await ch.recv(timeout=30)  # the child's exit ends the stream at once
        assert alive(grandchild)
        await ch.aclose()
        assert wait_dead(grandchild)
        assert_gone(ch)

    run(main)


def test_death_mid_message_and_exit_status() -> None:
    async def main() -> None:
        async with await aio.spawn(["sh", "-c", "printf '{\"half\": '; kill -9 $$"]) as ch:
            with pytest.raises(ChannelBroken, match=r"middle of a message.*SIGKILL"):
                await ch.recv(timeout=10)
        async with await aio.spawn(["sh", "-c", "echo '[1]'; exit 7"]) as ch:
            assert await ch.recv(timeout=10) == [1]
            with pytest.raises(ChannelBroken, match="exited with code 7"):
                await ch.recv(timeout=10)

    run(main)


def test_line_limit() -> None:
    async def main() -> None:
        child = py("print('\"' + 'x' * 300_000 + '\"'); print('{\"ok\": 1}', flush=True)")
        async with await aio.spawn(child, max_frame=100_000) as ch:
            with pytest.raises(FrameTooLarge):
                await ch.recv(timeout=10)
            assert await ch.recv(timeout=10) == {"ok": 1}

    run(main)


def test_token_and_sync_close_from_the_loop() -> None:
    async def main() -> None:
        child = py(
            """
            import ipcwire
            ch = ipcwire.stdio(token="tk")
            ch.send(ch.recv(timeout=10))
            """
        )
        ch = await aio.spawn(child, env=ENV, token="tk")
        await ch.send({"x": 1})
        assert await ch.recv(timeout=10) == {"x": 1}
        ch.close()  # starts the ladder without waiting...
        await ch.aclose()  # ...which this waits for
        assert ch.returncode == 0
        assert_gone(ch)

    run(main)


def test_children_of_a_loop_that_never_closed_them_are_shut_down_at_exit() -> None:
    import subprocess

    code = """
import asyncio, ipcwire
from ipcwire import aio

async def main():
    ch = await aio.spawn(["sh", "-c", "echo '{}'; exec sleep 3600"])
    await ch.recv(timeout=20)
    print(ch.pid, flush=True)   # and never aclose()

asyncio.run(main())
"""
    out = subprocess.run(py(code), env=ENV, capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout)
    assert wait_dead(pid, 10)
    assert group(pid) == []


def test_wait_does_not_stop_recv_noticing_the_exit() -> None:
    # wait() and the transport both watch the child's pidfd; wait() must not take the
    # transport's watch away, or a child whose grandchild holds stdout never ends recv.
    async def main() -> None:
        child = ["sh", "-c", 'sleep 3600 & echo "{\\"g\\": $!}"; read line; exit 0']
        async with await aio.spawn(child, exit_timeout=0.3, term_timeout=0.5) as ch:
            grandchild = (await ch.recv(timeout=10))["g"]
            assert await ch.wait(timeout=0.01) is None  # still running
            await ch.send({"go": 1})
            assert await ch.wait() == 0
            with pytest.raises(EndOfChannel, match="exited with code 0"):
                await ch.recv(timeout=10)  # the guard: a Timeout here is the bug
            assert alive(grandchild)
        assert wait_dead(grandchild)
        assert_gone(ch)

    run(main)

"""graceful_shutdown of a ws:// or http:// server that serve()s: SIGTERM is an orderly end.

A real server process (blocking or asyncio) serves with graceful_shutdown; clients of this
process wait in recv() (each handler has their message and prints so); SIGTERM then must end
every client's channel cleanly (EndOfChannel, as unix:// and shm:// do), not as a failure
(ws 1011 or 1006, http ConnectionRefused), and the server must not log its own shutdown as
a warning (helper-87's scale walkthrough).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import ipcwire
from ipcwire.errors import EndOfChannel

from .test_signals import ENV

N = 5
SERVER = {
    "blocking": """
import logging, os, sys, ipcwire
logging.basicConfig(level=logging.WARNING, format="LOG %(levelname)s %(message)s")
def handle(ch):
    for m in ch:
        os.write(1, f"got {m}\\n".encode())  # (one write: handlers run at once) no reply
with ipcwire.listen(sys.argv[1], codec="json") as s, ipcwire.graceful_shutdown(s):
    print(s.url, flush=True)
    s.serve(handle)
""",
    "asyncio": """
import asyncio, logging, os, sys
from ipcwire import aio
logging.basicConfig(level=logging.WARNING, format="LOG %(levelname)s %(message)s")
async def handle(ch):
    async for m in ch:
        os.write(1, f"got {m}\\n".encode())
async def main():
    s = await aio.listen(sys.argv[1], codec="json")
    aio.graceful_shutdown(s)
    print(s.url, flush=True)
    await s.serve(handle)
asyncio.run(main())
""",
}


@pytest.mark.parametrize("scheme", ["ws", "http", "unix"])
@pytest.mark.parametrize("api", ["blocking", "asyncio"])
def test_sigterm_ends_clients_cleanly(api: str, scheme: str, tmp_path: Path) -> None:
    """unix (goodbye frames) too: every blocking serve() now tells the shutdown when it has
    closed its channels (Listener._wait_served), not only ws's and http's."""
    where = f"unix://{tmp_path}/s.sock" if scheme == "unix" else f"{scheme}://127.0.0.1:0"
    srv = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SERVER[api]), where],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert srv.stdout is not None
    try:
        url = srv.stdout.readline().strip()
        assert url, srv.communicate(timeout=10)
        chans = [ipcwire.connect(url, codec="json", timeout=10) for _ in range(N)]
        seen: list[str] = []
        lock = threading.Lock()

        def wait_end(ch: ipcwire.Channel, i: int) -> None:
            ch.send(i)
            try:
                got = f"message {ch.recv()!r}"
            except Exception as exc:
                got = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, EndOfChannel):
                    got = "EndOfChannel"
            with lock:
                seen.append(got)

        threads = [threading.Thread(target=wait_end, args=(ch, i)) for i, ch in enumerate(chans)]
        for t in threads:
            t.start()
        got = sorted(srv.stdout.readline().strip() for _ in range(N))
        assert got == sorted(f"got {i}" for i in range(N))  # every client waits in recv()
        srv.send_signal(signal.SIGTERM)
        out, err = srv.communicate(timeout=30)
        for t in threads:
            t.join(30)
        for ch in chans:
            ch.close()
        assert srv.returncode == 0, err
        assert seen == ["EndOfChannel"] * N, seen
        logged = [line for line in (out + err).splitlines() if line.startswith("LOG")]
        assert logged == [], logged
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.communicate()

"""A peer past the handshake costs a stream server the bytes it sends, not the size its frame
header announces. Before, a 4-byte length header made the receiving decoder allocate a buffer
of the announced size (up to max_frame, 64 MiB) at the next read, whatever arrived after it:
a client of a no-token TCP server, or of a socket open to a group, took gigabytes from the
server with a few KiB per connection (40 such connections: 2.3 GB).

The server is a real child process (blocking, asyncio and uvloop listeners, unix and tcp);
hostile clients are raw sockets that do the handshake of docs/protocol.md, send a header
announcing 32 MiB and a little of it, and half-close. The server reports each one when its
recv() sees the stream end (the read after the header has happened by then, and the server
keeps the channel, with its partial frame, alive), and its RSS (/proc/PID/status) is read
while all are held. An honest client is then still served, with an 8 MiB message.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
from pathlib import Path

import pytest
from tests._proc import child, wait_line

import ipcwire

N = 8
ANNOUNCED = 32 << 20
SENT = 16 * 1024

_SERVER = """
import asyncio, sys, threading
import ipcwire
from ipcwire import aio

URL, KIND = sys.argv[1:3] if len(sys.argv) > 2 else (None, None)
held = []  # the channels whose peer ended: kept (with what arrived of their frame)
out = threading.Lock()


def say(*words):
    with out:
        print(*words, flush=True)


def rss_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


def commands():
    for line in sys.stdin:
        if line.strip() == "rss":
            say("rss", rss_kib())


def blocking(url):
    with ipcwire.listen(url) as lst:
        def handle(ch):
            try:
                while True:
                    ch.send(ch.recv())
            except ipcwire.IpcwireError as exc:
                held.append(ch)
                say("ended", type(exc).__name__)

        def accept():
            while True:
                threading.Thread(target=handle, args=(lst.accept(),), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        say("ready", lst.url)
        commands()


async def serve(url):
    async with await aio.listen(url) as lst:
        async def handle(ch):
            try:
                while True:
                    await ch.send(await ch.recv())
            except ipcwire.IpcwireError as exc:
                held.append(ch)
                say("ended", type(exc).__name__)

        async def accept():
            while True:
                asyncio.ensure_future(handle(await lst.accept()))

        task = asyncio.ensure_future(accept())
        say("ready", lst.url)
        await asyncio.get_running_loop().run_in_executor(None, commands)
        task.cancel()
"""


def _server_code(url: str, kind: str) -> str:
    if kind == "blocking":
        run = f"blocking({url!r})"
    elif kind == "asyncio":
        run = f"asyncio.run(serve({url!r}))"
    else:
        run = f"import uvloop\nuvloop.run(serve({url!r}))"
    return _SERVER + "\n" + run + "\n"


def _rss(proc: subprocess.Popen[str]) -> int:
    assert proc.stdin is not None
    proc.stdin.write("rss\n")
    proc.stdin.flush()
    word, kib = wait_line(proc).split()
    assert word == "rss"
    return int(kib) * 1024


def _hostile(url: str) -> socket.socket:
    """A client that does the handshake, then announces a 32 MiB frame, sends 16 KiB of
    it and half-closes."""
    if url.startswith("unix://"):
        s = socket.socket(socket.AF_UNIX)
        s.connect(url[len("unix://") :])
    else:
        host, port = url[len("tcp://") :].rsplit(":", 1)
        s = socket.create_connection((host, int(port)))
    hello = json.dumps(
        {"ipcwire": 1, "codec": "bytes", "framing": "length", "max_frame": 64 << 20}
    ).encode()
    s.sendall(struct.pack(">I", len(hello)) + hello)
    s.settimeout(10)
    got = b""
    while len(got) < 4 or len(got) < 4 + struct.unpack(">I", got[:4])[0]:
        more = s.recv(4096)
        assert more, "the server closed during the handshake"
        got += more
    assert "error" not in json.loads(got[4:])
    s.sendall(struct.pack(">I", ANNOUNCED) + b"x" * SENT)
    s.shutdown(socket.SHUT_WR)
    return s


@pytest.mark.parametrize("scheme", ["unix", "tcp"])
@pytest.mark.parametrize("kind", ["blocking", "asyncio", "uvloop"])
def test_an_announced_frame_costs_what_arrives(scheme: str, kind: str, tmp_path: Path) -> None:
    url = f"unix://{tmp_path / 's.sock'}" if scheme == "unix" else "tcp://127.0.0.1:0"
    with child(_server_code(url, kind)) as proc:
        word, real = wait_line(proc).split()
        assert word == "ready"
        with ipcwire.connect(real, timeout=10) as ch:  # the server's first channel is made
            assert ch.request(b"warm", timeout=10) == b"warm"
        assert (
            wait_line(proc) == "ended EndOfChannel"
        )  # (that client's end: the server held it too)
        before = _rss(proc)
        socks = [_hostile(real) for _ in range(N)]
        try:
            for _ in range(N):
                assert wait_line(proc) == "ended ChannelBroken"  # (mid-frame)
            grown = _rss(proc) - before
            # before: N x 32 MiB (256 MiB); now: a 256 KiB buffer each and what was sent
            assert grown < 16 << 20, f"the server grew {grown >> 20} MiB for {N} headers"
            big = bytes(range(256)) * (8 << 12)  # 8 MiB
            with ipcwire.connect(real, timeout=10) as ch:
                ch.send(big, timeout=10)
                assert ch.recv(timeout=10) == big
        finally:
            for s in socks:
                s.close()

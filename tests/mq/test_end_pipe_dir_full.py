"""/dev/shm with room for a listener's lock file but none for a channel's end pipe (out of
inodes): connect still opens the channel, without an end pipe (the documented fallback,
"Without an end pipe" in docs/mechanisms/mq.md: the end-of-channel marker alone), messages
go both ways, a clean close is EndOfChannel, and nothing is left behind, on both APIs. The
file system is a real two-inode tmpfs over /dev/shm (its root and the lock file) in a mount
namespace of the child's own."""

from __future__ import annotations

from tests.shm._tmpfs import run_on_tmpfs

CHANNEL = """
import asyncio, os, threading, posix_ipc, ipcwire
from ipcwire import aio

URL = f"mq:///t135-{os.getpid()}"

def blocking():
    with ipcwire.listen(URL) as listener:
        box = []
        t = threading.Thread(target=lambda: box.append(listener.accept(timeout=5)))
        t.start()
        with ipcwire.connect(URL, timeout=5) as client:
            t.join()
            with box[0] as server:
                client.send(b"ping")
                server.send(server.recv(timeout=5) + b"!")
                got = client.recv(timeout=5)
                print("in /dev/shm:", sorted(os.listdir("/dev/shm")))
            try:
                client.recv(timeout=5)
            except ipcwire.EndOfChannel:
                return got

async def asyncio_():
    async with await aio.listen(URL) as listener:
        client = await aio.connect(URL, timeout=5)
        async with client, await listener.accept(timeout=5) as server:
            await client.send(b"ping")
            await server.send(await server.recv(timeout=5) + b"!")
            got = await client.recv(timeout=5)
            await server.aclose()
            try:
                await client.recv(timeout=5)
            except ipcwire.EndOfChannel:
                return got

for name, attempt in (("blocking", blocking), ("asyncio", lambda: asyncio.run(asyncio_()))):
    try:
        print(name, attempt())
    except Exception as exc:
        print(name, type(exc).__name__, "|", exc)
print("left in /dev/shm:", sorted(os.listdir("/dev/shm")))
try:
    posix_ipc.MessageQueue(URL[5:]).close()
    print("queue left:", URL)
except posix_ipc.ExistentialError:
    print("no queue left")
"""


def test_no_room_for_the_end_pipe_opens_the_channel_without_one() -> None:
    proc = run_on_tmpfs(CHANNEL, "/dev/shm", "size=64k,nr_inodes=2")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("in /dev/shm: ['ipcwire-mq.t135-"), proc.stdout
    assert lines[0].endswith(".lock']"), proc.stdout  # the lock file, no end pipe
    assert lines[1:] == [
        "blocking b'ping!'",
        "asyncio b'ping!'",
        "left in /dev/shm: []",
        "no queue left",
    ], proc.stdout

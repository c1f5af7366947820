"""An mq listener whose lock file cannot be made because /dev/shm is full (no free inode)
raises ResourceExhausted naming the mq:// URL, the full directory and a fix that applies
(the user cannot choose where mq keeps its lock files), on both APIs. Before, it was
"no space left ... free some, or use a directory on another one while opening the lock file
/dev/shm/ipcwire-mq.NAME.lock": no URL, and a fix that did not apply. The file system is a
real one-inode tmpfs over /dev/shm in a mount namespace of the child's own.
"""

from __future__ import annotations

from tests.shm._tmpfs import run_on_tmpfs

LISTEN = """
import asyncio, os, ipcwire
from ipcwire import aio

URL = f"mq:///t131-{os.getpid()}"

def blocking():
    ipcwire.listen(URL).close()

async def asyncio_():
    lst = await aio.listen(URL)
    await lst.close()

for name, attempt in (("blocking", blocking), ("asyncio", lambda: asyncio.run(asyncio_()))):
    try:
        attempt()
        print(name, "listening")
    except ipcwire.IpcwireError as exc:
        print(name, type(exc).__name__, URL, "|", exc)
import posix_ipc
try:
    posix_ipc.MessageQueue(URL[5:]).close()
    print("queue left:", URL)
except posix_ipc.ExistentialError:
    print("no queue left")
"""


def test_full_dev_shm_names_the_url_and_a_fix_that_applies() -> None:
    proc = run_on_tmpfs(LISTEN, "/dev/shm", "size=64k,nr_inodes=1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3, proc.stdout
    for line in lines[:2]:
        assert " ResourceExhausted " in line, line
        url, _, message = line.partition(" ResourceExhausted ")[2].partition(" | ")
        assert f"cannot listen at {url}: no room for its lock file /dev/shm/" in message
        assert "df -i /dev/shm" in message and "--shm-size" in message, message
        assert "use a directory on another one" not in message, message
    assert lines[2] == "no queue left", proc.stdout

"""A FIFO listener on a full file system (no inode for the lock file, or for the FIFO after
it) raises ResourceExhausted naming the fifo:// URL, the full directory and the fix, on both
APIs, and leaves nothing behind. Before, a full directory at the lock file said "... while
opening the lock file /dir/f.lock" without the URL (and the FIFO's own, a message without
the directory to look at). The file system is a real tmpfs with 1 or 2 inodes (its root,
then the lock file), mounted in a mount namespace of the child's own.
"""

from __future__ import annotations

import pytest
from tests.shm._tmpfs import run_on_tmpfs

LISTEN = """
import asyncio, os, sys, ipcwire
from ipcwire import aio

URL = "fifo://" + sys.argv[1] + "/in.fifo"

def blocking():
    ipcwire.listen(URL).close()

async def asyncio_():
    lst = await aio.listen(URL)
    await lst.close()

for name, attempt in (("blocking", blocking), ("asyncio", lambda: asyncio.run(asyncio_()))):
    try:
        attempt()
        print(name, "listening")
    except Exception as exc:
        print(name, type(exc).__name__, exc)
print("left:", os.listdir(sys.argv[1]))
"""


@pytest.mark.parametrize(("inodes", "what"), [(1, "the FIFO's lock file"), (2, "the FIFO")])
def test_full_directory_names_the_url(tmp_path: object, inodes: int, what: str) -> None:
    where = str(tmp_path)
    proc = run_on_tmpfs(LISTEN, where, f"size=64k,nr_inodes={inodes}", args=(where,))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3, proc.stdout
    for line in lines[:2]:
        assert " ResourceExhausted " in line, line
        assert (
            f"cannot listen at fifo://{where}/in.fifo: no room for {what} {where}/in.fifo" in line
        )
        assert f"df -i {where}" in line and "another file system" in line, line
    assert lines[2] == "left: []", proc.stdout

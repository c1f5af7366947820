"""shm://NAME on a full /tmp (no free inode for the socket directory /tmp/ipcwire-UID) is
ResourceExhausted naming the endpoint, the full file system and the ways around it; both
APIs. Before, it was PermissionDenied "cannot create the socket directory ... No space left
on device": the fix it gave (a writable directory) did not apply. The file system is a real
tmpfs with one inode (its root), mounted over /tmp in a mount namespace of the child's own.
"""

from __future__ import annotations

import os

from tests.shm._tmpfs import run_on_tmpfs

LISTEN = """
import asyncio, ipcwire
from ipcwire import aio

def blocking():
    ipcwire.listen("shm://full-tmp").close()

async def asyncio_():
    lst = await aio.listen("shm://full-tmp")
    await lst.close()

for name, attempt in (("blocking", blocking), ("asyncio", lambda: asyncio.run(asyncio_()))):
    try:
        attempt()
        print(name, "listening")
    except ipcwire.IpcwireError as exc:
        print(name, type(exc).__name__, exc)
"""


def test_full_tmp_is_resource_exhausted() -> None:
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    proc = run_on_tmpfs(LISTEN, "/tmp", "size=64k,nr_inodes=1", env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2, proc.stdout
    for line in lines:
        assert " ResourceExhausted " in line, line
        assert "shm://full-tmp" in line and f"/tmp/ipcwire-{os.getuid()}" in line, line
        assert "df -i /tmp" in line and "XDG_RUNTIME_DIR" in line, line
        assert "shm:///path/of/your/choice.sock" in line, line

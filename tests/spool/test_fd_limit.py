"""Opening a spool with the descriptor limit reached: a typed error, and no descriptor of
the half-opened channel left behind (the store's two, the watcher's)."""

from __future__ import annotations

from pathlib import Path

from tests._proc import FD_ROOM, run_python

CHILD = """
import asyncio, sys, ipcwire, ipcwire.spool.blocking, ipcwire.spool.aio
url = "spool://" + sys.argv[1] + "/q"
ipcwire.connect(url).close()

loop = asyncio.new_event_loop()  # made now: it needs descriptors of its own


def open_at(room, how):
    def attempt():
        if how == "asyncio":
            async def main():
                ch = await ipcwire.aio.connect(url, watch="inotify")
                await ch.aclose()
            loop.run_until_complete(main())
        else:
            ipcwire.connect(url, watch=how).close()
        return "ok"

    result, leaked = at_fd_room(room, attempt)
    if isinstance(result, Exception):
        result = type(result).__name__
    print(how, room, result, "leaked", leaked)

for how in ("auto", "inotify", "asyncio"):
    for room in range(4):
        open_at(room, how)
loop.close()
"""


def test_running_out_of_descriptors_while_opening_leaks_none(spool_dir: Path) -> None:
    out = run_python(f"import sys\nsys.argv[1:] = [{str(spool_dir)!r}]\n" + FD_ROOM + CHILD)
    lines = out.splitlines()
    assert len(lines) == 12, out
    assert not [line for line in lines if "UNTYPED" in line or not line.endswith("leaked 0")], out

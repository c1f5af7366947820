"""Opening a spool with the descriptor limit reached: a typed error, and no descriptor of
the half-opened channel left behind (the store's two, the watcher's)."""

from __future__ import annotations

from pathlib import Path

from tests._proc import run_python

CHILD = """
import asyncio, os, resource, sys, ipcwire, ipcwire.spool.blocking, ipcwire.spool.aio
url = "spool://" + sys.argv[1] + "/q"
ipcwire.connect(url).close()

def nfd():
    return len(os.listdir("/proc/self/fd"))

loop = asyncio.new_event_loop()  # made now: it needs descriptors of its own


def open_at(room, how):
    # fill the holes below the highest descriptor, so that exactly `room` more fit
    hi = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    fill = []
    while (fd := os.open("/dev/null", os.O_RDONLY)) <= hi:
        fill.append(fd)
    os.close(fd)
    before = nfd() - len(fill)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hi + 1 + room, 4096))
    try:
        if how == "asyncio":
            async def main():
                ch = await ipcwire.aio.connect(url, watch="inotify")
                await ch.aclose()
            loop.run_until_complete(main())
        else:
            ipcwire.connect(url, watch=how).close()
        result = "ok"
    except ipcwire.IpcwireError as exc:
        result = type(exc).__name__
    except Exception as exc:
        result = "UNTYPED " + repr(exc)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
        for fd in fill:
            os.close(fd)
    print(how, room, result, "leaked", nfd() - before)

for how in ("auto", "inotify", "asyncio"):
    for room in range(4):
        open_at(room, how)
loop.close()
"""


def test_running_out_of_descriptors_while_opening_leaks_none(spool_dir: Path) -> None:
    out = run_python(f"import sys\nsys.argv[1:] = [{str(spool_dir)!r}]\n" + CHILD)
    lines = out.splitlines()
    assert len(lines) == 12, out
    assert not [line for line in lines if "UNTYPED" in line or not line.endswith("leaked 0")], out

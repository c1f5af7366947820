"""``ipcwire doctor --shm`` / ``shm://``: a segment leaked by a kill -9'd process, and a
corrupted ring header in a live process's shared memory; each named, and fixed."""

from __future__ import annotations

import os

from tests._proc import child, kill9, wait_line
from tests.doctor._helpers import doctor_json, findings

from ipcwire.doctor import check_shm
from ipcwire.shm import _layout as L

# A process that creates a named POSIX shared-memory segment and maps it (as shm_open does).
SEGMENT = """
import mmap, os, sys
fd = os.open({path!r}, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
os.ftruncate(fd, 1 << 20)
m = mmap.mmap(fd, 1 << 20)
m[:5] = b"hello"
print("ready", flush=True)
sys.stdin.read()
"""

# A process holding an ipcwire ring segment (the memfd the shm mechanism uses); on request it
# corrupts ring 1's header the way a buggy or hostile peer could.
RING = """
import os, struct, sys
from ipcwire.shm import _layout as L
from ipcwire.shm._segment import create_segment
fd, seg = create_segment((4096, 4096))
os.close(fd)
print("ready", flush=True)
if sys.stdin.readline() == "corrupt\\n":
    struct.pack_into("=Q", seg.mm, L.ring_span(4096) + 16, 12345)  # capacity of ring 1
    print("corrupted", flush=True)
sys.stdin.read()
"""


def _leak_path() -> str:
    return f"/dev/shm/psm_doctor_{os.getpid()}"


def test_segment_leaked_by_a_killed_process_is_named_and_removing_it_fixes_it() -> None:
    path = _leak_path()
    try:
        with child(SEGMENT.format(path=path)) as proc:
            assert wait_line(proc) == "ready"
            [used] = check_shm(os.path.basename(path)).find("shm.segment")
            assert used.data["pids"] == [proc.pid]
            kill9(proc)
        code, data = doctor_json("--shm")
        assert code == 1
        leaked = [f for f in findings(data, "shm.leaked") if f["data"]["path"] == path]
        assert leaked and leaked[0]["status"] == "problem"
        assert leaked[0]["data"]["size"] == 1 << 20
        assert "no process maps it, holds it open or locks it" in leaked[0]["evidence"]
        assert f"rm {path}" in leaked[0]["fix"]
        os.unlink(path)  # the fix
        assert not [f for f in check_shm().find("shm.leaked") if f.data["path"] == path]
    finally:
        if os.path.exists(path):
            os.unlink(path)


def test_corrupted_ring_header_is_named_with_its_process() -> None:
    with child(RING) as proc:
        assert wait_line(proc) == "ready"
        mine = [f for f in check_shm().find("shm.corrupt_ring") if f"pid {proc.pid}" in f.summary]
        assert mine == []
        rings = check_shm().find("shm.rings")
        assert rings and any(f"pid {proc.pid}" in e for e in rings[0].evidence)
        assert proc.stdin is not None
        proc.stdin.write("corrupt\n")
        proc.stdin.flush()
        assert wait_line(proc) == "corrupted"
        code, data = doctor_json("--shm")
        assert code == 1
        [bad] = [f for f in findings(data, "shm.corrupt_ring") if f"pid {proc.pid}" in f["summary"]]
        assert f"ring 1 at offset {L.ring_span(4096)}: bad capacity" in bad["evidence"][0]
        assert "RemoteProtocolError" in bad["fix"] and "restart both processes" in bad["fix"]
    # The fix: restart; a fresh segment validates.
    with child(RING) as proc:
        assert wait_line(proc) == "ready"
        report = check_shm()
        assert not [f for f in report.find("shm.corrupt_ring") if f"pid {proc.pid}" in f.summary]


def test_a_leaked_named_ring_with_a_bad_header_is_both_corrupt_and_leaked() -> None:
    from ipcwire.shm._ring import init_ring

    path = f"/dev/shm/ipcwire-doctor-ring-{os.getpid()}"
    size = L.ring_span(4096)
    try:
        buf = bytearray(size)
        init_ring(buf, 4096)
        buf[8:12] = (99).to_bytes(4, "little")  # layout version 99
        with open(path, "wb") as f:
            f.write(buf)
        report = check_shm(os.path.basename(path))
        [bad] = report.find("shm.corrupt_ring")
        assert "unsupported ring layout version" in bad.evidence[0]
        [leak] = report.find("shm.leaked")
        assert "(an ipcwire segment)" in leak.summary
    finally:
        os.unlink(path)
    assert check_shm(os.path.basename(path)).find("shm.no_segment")


SHM_LISTENER = """
import sys
import ipcwire, ipcwire.shm
from ipcwire.registry import register
try:
    ipcwire.lookup("shm")
except ipcwire.InvalidURL:
    register(ipcwire.shm.SPEC)  # until the registry lists it
lst = ipcwire.listen({url!r})
client = ipcwire.connect({url!r}, timeout=10)
server_end = lst.accept(timeout=10)
print("ready", flush=True)
sys.stdin.read()
"""


def test_shm_url_checks_the_listener_socket_and_its_rings() -> None:
    url = f"shm://doctor-{os.getpid()}"
    with child(SHM_LISTENER.format(url=url)) as proc:
        assert wait_line(proc) == "ready"
        code, data = doctor_json(url)
        assert code == 0, data
        [live] = findings(data, "unix.live")
        assert live["data"]["pid"] == proc.pid
        [rings] = findings(data, "shm.rings")
        assert any(f"pid {proc.pid}" in e for e in rings["evidence"])
        assert "with sound ring headers" in rings["summary"]
        kill9(proc)
    code, data = doctor_json(url)
    assert code == 1
    [stale] = findings(data, "unix.stale")
    [where] = findings(data, "shm.rendezvous")
    assert stale["fix"].startswith(f"rm {where['data']['path']}")
    with child(SHM_LISTENER.format(url=url)) as proc:  # the fix: listen() removes it
        assert wait_line(proc) == "ready"
        code, data = doctor_json(url)
        assert code == 0 and findings(data, "unix.live")[0]["data"]["pid"] == proc.pid

"""``ipcwire doctor mq://`` and ``spool://``: a full queue nobody reads, a queue left by a
killed listener, a claim stuck behind a killed consumer; each named, and fixed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import posix_ipc
import pytest
from tests._proc import child, kill9, wait_line
from tests.doctor._helpers import doctor_json, findings

import ipcwire
from ipcwire.doctor import check_mq, check_spool

FILLER = """
import posix_ipc, sys
q = posix_ipc.MessageQueue({name!r}, posix_ipc.O_CREX, max_messages=4, max_message_size=64)
for i in range(4):
    q.send(b"job %d" % i)
print("ready", flush=True)
sys.stdin.read()
"""


def test_full_queue_names_who_holds_it_and_draining_fixes_it() -> None:
    name = f"/ipcwire-doctor-full-{os.getpid()}"
    try:
        with child(FILLER.format(name=name)) as proc:
            assert wait_line(proc) == "ready"
            code, data = doctor_json(f"mq://{name}")
            assert code == 1
            [full] = findings(data, "mq.full")
            assert full["data"]["depth"] == 4 and full["data"]["max_messages"] == 4
            assert full["data"]["pids"] == [proc.pid]
            assert f"pid {proc.pid}" in "\n".join(full["evidence"])
            assert findings(data, "mq.limits")
            q = posix_ipc.MessageQueue(name)  # the fix: a receiver drains it
            for _ in range(4):
                q.receive(timeout=5)
            q.close()
            [ok] = check_mq(name).find("mq.queue")
            assert ok.data["depth"] == 0
    finally:
        posix_ipc.unlink_message_queue(name)


LISTENER = """
import ipcwire, sys
lst = ipcwire.listen({url!r})
print("ready", flush=True)
sys.stdin.read()
"""


def test_queue_left_by_a_killed_listener_is_named_and_the_next_listen_adopts_it() -> None:
    name = f"/ipcwire-doctor-orphan-{os.getpid()}"
    url = f"mq://{name}"
    with child(LISTENER.format(url=url)) as proc:
        assert wait_line(proc) == "ready"
        [live] = check_mq(name).find("mq.queue")
        assert proc.pid in live.data["pids"]
        kill9(proc)
    [orphan] = check_mq(name).find("mq.orphaned")
    assert orphan.status == "warning"
    assert f"left by pid {proc.pid}" in orphan.summary
    assert orphan.fix is not None and "adopts it" in orphan.fix
    with ipcwire.listen(url) as lst:  # the fix
        [live] = check_mq(name).find("mq.queue")
        assert os.getpid() in live.data["pids"]
        lst.close()
    [missing] = check_mq(name).problems
    assert missing.check == "mq.missing"


CONSUMER = """
import ipcwire, sys
ch = ipcwire.connect({url!r})
d = ch.claim(timeout=10)
print(d.name, flush=True)
sys.stdin.read()
"""


def test_claim_of_a_killed_consumer_is_stuck_and_a_new_consumer_takes_it_back(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    url = f"spool://{spool}"
    with ipcwire.connect(url) as producer:
        producer.send(b"job")
    with child(CONSUMER.format(url=url)) as proc:
        name = wait_line(proc)
        [claim] = check_spool(str(spool)).find("spool.claim")
        assert claim.data["pids"] == [proc.pid]
        kill9(proc)
    code, data = doctor_json(url)
    assert code == 1
    [stuck] = findings(data, "spool.stuck_claim")
    assert stuck["data"]["path"] == str(spool / "cur" / name)
    assert "its consumer died" in stuck["summary"]
    assert "start a consumer" in stuck["fix"]
    with ipcwire.connect(url) as consumer:  # the fix
        assert consumer.recv(timeout=10) == b"job"
    report = check_spool(str(spool))
    assert report.ok and not report.find("spool.stuck_claim")


def test_not_a_spool(tmp_path: Path) -> None:
    assert check_spool(str(tmp_path / "nowhere")).problems[0].check == "spool.missing"
    assert check_spool(str(tmp_path)).problems[0].check == "spool.layout"


def test_a_lock_file_whose_queue_is_gone_gets_rm_as_its_fix() -> None:
    # A listener killed with kill -9, its queue removed as doctor mq:// says: only the lock
    # file is left, and the machine report must say what removes it.
    from ipcwire.doctor import check_machine
    from ipcwire.mq._rendezvous import lock_path

    name = f"/ipcwire-doctor-lockonly-{os.getpid()}"
    lock = lock_path(name)
    with child(LISTENER.format(url=f"mq://{name}")) as proc:
        assert wait_line(proc) == "ready"
        kill9(proc)
    try:
        posix_ipc.unlink_message_queue(name)
        [gone] = [f for f in check_machine().find("machine.mq_listener_gone")
                  if f.evidence[0].startswith(f"{lock}:")]  # fmt: skip
        assert gone.fix is not None and gone.fix.startswith(f"rm {lock}")
        os.unlink(lock)  # the fix
        assert not [f for f in check_machine().find("machine.mq_listener_gone")
                    if f.evidence[0].startswith(f"{lock}:")]  # fmt: skip
    finally:
        if os.path.exists(lock):
            os.unlink(lock)


def test_a_broken_import_of_the_mq_lock_path_is_an_error_not_a_skipped_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Any ImportError turned the lock check off without a word (the doctor then never named
    a stale listener lock); only posix_ipc, the optional extra, may be missing."""
    from ipcwire.doctor.queues import mq_lock_name

    monkeypatch.setitem(sys.modules, "ipcwire.mq._rendezvous", None)
    with pytest.raises(ImportError):
        mq_lock_name("/dev/shm/ipcwire-mq.app.lock")


def test_the_printed_removal_of_a_left_queue_works_in_a_plain_shell() -> None:
    # The fix said `python -c "import posix_ipc; ..."`: the `python` on PATH is often not
    # the one ipcwire (and posix_ipc) is installed in, and then it fails (ModuleNotFoundError,
    # or no `python` at all); the queue and its lock stayed.
    name = f"/ipcwire-doctor-rm-{os.getpid()}"
    url = f"mq://{name}"
    with child(LISTENER.format(url=url)) as proc:
        assert wait_line(proc) == "ready"
        kill9(proc)
    [gone] = check_mq(name).find("mq.listener_gone")
    assert gone.fix is not None
    command = gone.fix.split("if it is not coming back, remove the queue: ", 1)[1]
    lock = gone.data["lock"]
    out = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=30,
                         env={"PATH": "/usr/bin:/bin"}, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    [missing] = check_mq(name).problems
    assert missing.check == "mq.missing"
    assert not os.path.exists(lock)

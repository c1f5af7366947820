"""``ipcwire doctor`` under the limits that break ipcwire in containers, each real: an
open-file limit whose hard limit is the problem (prlimit), a pids cgroup's pids.max, an
RLIMIT_MSGQUEUE too small for one mq listener, and a /dev/shm out of inodes (a tiny tmpfs in
a mount namespace of the child's own). Before: the open-file fix was "ulimit -n 64" (the
value it had), the pids limit and RLIMIT_MSGQUEUE were not looked at (mq "available" while
every listen() failed), and a 64 KiB /dev/shm was "only 0 MiB (Docker's default)", its inodes
not looked at, and blamed for ipcwire's shm:// (which uses memfds).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.shm._pids import thread_limit
from tests.shm._tmpfs import run_on_tmpfs

DOCTOR = "import sys\nfrom ipcwire.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"


def _findings(out: str, check: str) -> list[dict[str, Any]]:
    data = json.loads(out)
    return [f for r in data["reports"] for f in r["findings"] if f["check"] == check]


def _doctor(*args: str, prefix: tuple[str, ...] = ()) -> str:
    proc = subprocess.run(
        [*prefix, sys.executable, "-c", DOCTOR, "doctor", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.stdout


def test_a_hard_open_file_limit_is_named_as_such() -> None:
    [hard] = _findings(_doctor(prefix=("prlimit", "--nofile=64")), "machine.nofile")
    assert "the hard limit (64) is the problem" in hard["fix"], hard
    assert "LimitNOFILE=" in hard["fix"] and "--ulimit nofile=" in hard["fix"], hard
    assert "ulimit -n 64" not in hard["fix"], hard
    [soft] = _findings(_doctor(prefix=("prlimit", "--nofile=64:4096")), "machine.nofile")
    assert soft["fix"].startswith("raise the soft limit (up to the hard 4096): ulimit -n 4096")


def test_a_low_pids_max_is_reported_with_its_fix() -> None:
    with thread_limit() as limit:
        (limit.path / "pids.max").write_text("20")
        script = f'echo $$ > "{limit.path}/cgroup.procs" && exec "$@"'
        out = _doctor(prefix=("sh", "-c", script, "sh"))
    [pids] = _findings(out, "machine.pids")
    assert "allows only 20 processes and threads" in pids["summary"], pids
    assert pids["data"]["path"] == f"{limit.path}/pids.max", pids
    assert "--pids-limit" in pids["fix"] and "TasksMax=" in pids["fix"], pids
    [limits] = _findings(out, "machine.limits")
    assert f"cgroup pids.max: 20 ({limit.path}/pids.max, 1 in use)" in limits["evidence"]


def test_an_rlimit_msgqueue_too_small_for_a_listener_is_a_problem() -> None:
    prefix = ("prlimit", "--msgqueue=8192")
    for out in (_doctor(prefix=prefix), _doctor("mq:///doctor-rlimit", prefix=prefix)):
        [mq] = _findings(out, "mq.rlimit")
        assert mq["status"] == "problem", mq
        assert "is 8192 bytes: too small for even one mq:// listener" in mq["summary"], mq
        assert "every listen() fails" in mq["summary"], mq
        assert "LimitMSGQUEUE=" in mq["fix"] and "--ulimit msgqueue=" in mq["fix"], mq


def test_dev_shm_out_of_inodes_and_small_is_said_in_its_units() -> None:
    proc = run_on_tmpfs(DOCTOR, "/dev/shm", "size=64k,nr_inodes=1", args=("doctor", "--json"))
    assert proc.returncode in (0, 1), proc.stderr
    [inodes] = _findings(proc.stdout, "shm.inodes")
    assert inodes["status"] == "problem", inodes
    assert "mq:// listen() fails" in inodes["summary"], inodes
    assert "does not use it (its rings are memfds)" in inodes["summary"], inodes
    assert "nr_inodes=" in inodes["fix"], inodes
    [small] = _findings(proc.stdout, "shm.small")
    assert "/dev/shm holds only 64 KiB (Docker's default is 64 MiB)" in small["summary"], small
    assert "0 MiB" not in small["summary"], small

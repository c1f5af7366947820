"""``ipcwire doctor spool://`` on a spool another user made: a finding with the owner and the
fix, not a traceback (doctor listed the directory it may not read and died with
PermissionError); and the printed fix, run as printed, lets that user in."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests._proc import NOBODY
from tests.doctor._helpers import doctor_json, findings

import ipcwire

RECV_AS_NOBODY = """
import os, sys, secrets, fcntl, ipcwire, ipcwire.spool.blocking
ipcwire.mechanisms()
os.setgroups([])
os.setgid({uid})
os.setuid({uid})
with ipcwire.connect({url!r}) as ch:
    print(ch.recv(timeout=10).decode())
"""


@pytest.fixture
def base() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="iw-", dir="/tmp"))
    os.chmod(d, 0o711)  # nobody may pass through, not list
    try:
        yield d
    finally:
        shutil.rmtree(d)


def test_a_spool_of_another_user_is_named_and_the_printed_fix_shares_it(base: Path) -> None:
    spool = base / "spool"
    with ipcwire.connect(f"spool://{spool}", fsync=False) as producer:  # mode 0700, root's
        producer.send(b"job")
    code, data = doctor_json(f"spool://{spool}", as_nobody=True)
    assert code == 1
    [denied] = findings(data, "spool.permission")
    assert denied["data"]["uid"] == os.getuid()
    assert f"you are uid {NOBODY} (groups {NOBODY})" in denied["evidence"]
    # the fix, followed as printed (GROUP: the group nobody is in)
    match = re.search(r"chgrp -R GROUP (\S+) && chmod -R (\S+) (\S+)", denied["fix"])
    assert match is not None, denied["fix"]
    command = match.group(0).replace("GROUP", str(NOBODY))
    subprocess.run(command, shell=True, check=True, timeout=10)
    assert "mode=0o770 on every side" in denied["fix"]
    url = re.search(r"spool://\S+\?mode=0o770", denied["fix"])
    assert url is not None
    code, data = doctor_json(f"spool://{spool}", as_nobody=True)
    assert code == 0 and findings(data, "spool.shared")
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(RECV_AS_NOBODY.format(uid=NOBODY, url=url[0]))],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "job"


def test_root_is_refused_another_users_spool_and_doctor_says_so(base: Path) -> None:
    # listen()/connect() refuse a spool owned by another uid whose group is not theirs, root
    # included; doctor said "ok" to root
    spool = base / "spool"
    for d in (spool, spool / "tmp", spool / "new", spool / "cur", spool / "dead"):
        d.mkdir(mode=0o700)
        os.chown(d, NOBODY, NOBODY)
    code, data = doctor_json(f"spool://{spool}")
    assert code == 1
    [denied] = findings(data, "spool.permission")
    assert denied["data"]["uid"] == NOBODY
    with pytest.raises(ipcwire.PermissionDenied):
        ipcwire.connect(f"spool://{spool}")

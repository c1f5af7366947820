"""``ipcwire doctor`` on a machine where a process's socket, mapped file or name is not UTF-8.

Any process may bind a Unix socket at b"/tmp/\\xff.sock", map a file whose name is not text, or
call itself b"iw\\xfdt". Before, every form of ``ipcwire doctor`` (no argument, a unix URL,
shm://x, --pid N) died with UnicodeDecodeError reading /proc/net/unix (and /proc/PID/maps,
/proc/PID/stat) as UTF-8 text. Now /proc is read as file names are (os.fsdecode: the bytes
round-trip), and such a name is printed escaped, ``/tmp/\\xff.sock``, in any locale.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests._proc import wait_line

from ipcwire import _procfs

UTF8_STRICT = {"LC_ALL": "C.UTF-8", "PYTHONUTF8": "0"}  # stdout errors="strict"
ASCII = {"LC_ALL": "C", "PYTHONUTF8": "0"}  # file-system and stdout encodings: ascii


class Holder:
    """A child bound at ``<dir>/\\xff.sock``, mapping ``<dir>/\\xfe.map``, named b"iw\\xfdt"."""

    def __init__(self, proc: subprocess.Popen[str], folder: bytes) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.sock = folder + b"/\xff.sock"
        self.map = folder + b"/\xfe.map"


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[Holder]:
    folder = os.fsencode(tmp_path)
    code = f"""
        import mmap, os, socket, sys
        folder = {folder!r}
        s = socket.socket(socket.AF_UNIX)
        s.bind(folder + b"/\\xff.sock")
        s.listen()
        with open(folder + b"/\\xfe.map", "wb") as f:
            f.write(b"x" * 4096)
        fd = os.open(folder + b"/\\xfe.map", os.O_RDONLY)
        m = mmap.mmap(fd, 4096, prot=mmap.PROT_READ)
        with open("/proc/self/comm", "wb") as f:
            f.write(b"iw\\xfdt")
        print("ready", flush=True)
        sys.stdin.read()
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_line(proc) == "ready"
        yield Holder(proc, folder)
    finally:
        proc.kill()
        proc.communicate(timeout=20)


def test_procfs_reads_names_that_are_not_utf8_as_their_bytes(holder: Holder) -> None:
    entries = [e for e in _procfs.unix_socket_table() if os.fsencode(e.path) == holder.sock]
    assert len(entries) == 1 and entries[0].listening
    assert _procfs.unix_socket_inodes(os.fsdecode(holder.sock)) == {entries[0].inode}
    assert os.fsdecode(holder.map) in _procfs.mapped_files(holder.pid)
    assert holder.map in {os.fsencode(m.path) for m in _procfs.memory_maps(holder.pid)}
    stat = _procfs.proc_stat(holder.pid)
    assert stat is not None and os.fsencode(stat.comm) == b"iw\xfdt"
    assert os.fsencode(_procfs.proc_status(holder.pid)["Name"]) == b"iw\xfdt"


def _doctor(args: list[str | bytes], env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    full = {k: v for k, v in os.environ.items() if k not in ("LANG", "LC_CTYPE", "PYTHONUTF8")}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "ipcwire", "doctor", *args],
        env=full,
        capture_output=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("env", [UTF8_STRICT, ASCII], ids=["utf8", "ascii"])
@pytest.mark.parametrize("form", ["machine", "unix-url", "shm", "pid", "the-socket"])
def test_every_form_of_doctor_works_and_shows_the_name_escaped(
    holder: Holder, tmp_path: Path, form: str, env: dict[str, str]
) -> None:
    forms: dict[str, list[str | bytes]] = {
        "machine": [],
        "unix-url": [f"unix://{tmp_path}/nothing.sock"],
        "shm": ["shm://ipcwire-no-such-ring"],
        "pid": ["--pid", str(holder.pid)],
        "the-socket": [holder.sock],
    }
    args = forms[form]
    out = _doctor(args, env)
    err = out.stderr.decode(errors="replace")
    assert out.returncode in (0, 1), err
    assert b"Traceback" not in out.stderr, err
    out.stdout.decode("ascii" if env is ASCII else "utf-8")  # strict: nothing raw
    if form in ("pid", "the-socket"):
        assert b"/\\xff.sock" in out.stdout, out.stdout.decode(errors="replace")

"""shm://NAME is per user: a client whose server runs as another user is told so, and how to
share a channel between users (shm:///path with mode=), instead of only "no socket at
shm://NAME: the file /tmp/ipcwire-UID/shm.NAME.sock does not exist. Is the server
running...", while it was; and connect() makes no directory (only listen() needs one).
Real users: this process (root) and uid 65534 (tests/_proc.python(as_nobody=True))."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from tests._proc import NOBODY, python, run_python, wait_line

import ipcwire

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="needs root to run as another user")

NOBODY_DIR = f"/tmp/ipcwire-{NOBODY}"
# import first (the interpreter lives under /root), then become uid 65534
AS_NOBODY = f"""
import asyncio, os, sys
import ipcwire, ipcwire.shm.blocking, ipcwire.shm.aio
from ipcwire import aio
ipcwire.mechanisms()
os.environ.pop("XDG_RUNTIME_DIR", None)
os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})
"""
SHARE = "to share a channel between users, listen at shm:///"


@contextmanager
def nobody_dir_left_as_it_was() -> Iterator[None]:
    """Remove /tmp/ipcwire-65534 at the end if it was not there before."""
    existed = os.path.lexists(NOBODY_DIR)
    try:
        yield
    finally:
        if not existed:
            shutil.rmtree(NOBODY_DIR, ignore_errors=True)


def _name() -> str:
    return f"ou{uuid.uuid4().hex[:10]}"


def test_a_server_of_another_user_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """This user can see into the other user's directory (root): it says whose socket."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    name = _name()
    with nobody_dir_left_as_it_was():
        server = python(
            AS_NOBODY
            + f"""
with ipcwire.listen("shm://{name}"):
    print("ready", flush=True)
    sys.stdin.read()
"""
        )
        try:
            assert wait_line(server) == "ready"
            with pytest.raises(ipcwire.errors.ConnectionRefused) as refused:
                ipcwire.connect(f"shm://{name}", timeout=5)
            text = str(refused.value)
            assert "does not exist. Is the server running" in text
            assert (
                f"shm://NAME is per user (uid 0 looks in /tmp/ipcwire-0), and another user "
                f"has a socket of that name (uid {NOBODY}'s {NOBODY_DIR}/shm.{name}.sock): "
                f"the server runs as another user; {SHARE}"
            ) in text
        finally:
            server.communicate("", timeout=10)


# A uid of its own, no other test's (tests run in two processes at once): whether its
# /tmp/ipcwire-UID exists is this test's alone to change.
LONER = 64999
LONER_DIR = f"/tmp/ipcwire-{LONER}"


def test_a_client_of_another_user_is_told_and_makes_no_directory() -> None:
    """The client (a uid of no other process) cannot look into root's 0700 directory: it
    says that the server may run as another user, and leaves no /tmp/ipcwire-UID behind."""
    name = _name()
    shutil.rmtree(LONER_DIR, ignore_errors=True)  # (a run killed half-way left it)
    # another program's directory, not a user's: it was listed as "uid 0's /tmp/ipcwire-..."
    stray = f"/tmp/ipcwire-stray-{name}"
    os.mkdir(stray, 0o700)
    with contextlib.ExitStack() as undo:
        undo.callback(os.rmdir, stray)
        undo.enter_context(ipcwire.listen(f"shm:///tmp/ipcwire-0/shm.{name}.sock"))
        assert os.stat("/tmp/ipcwire-0").st_uid == 0
        out = run_python(
            AS_NOBODY.replace(str(NOBODY), str(LONER))
            + f"""
for how in ("blocking", "asyncio"):
    try:
        if how == "blocking":
            ipcwire.connect("shm://{name}", timeout=5)
        else:
            asyncio.run(aio.connect("shm://{name}", timeout=5))
    except ipcwire.errors.ConnectionRefused as exc:
        print(how, exc)
print("dir", os.path.lexists("{LONER_DIR}"))
"""
        )
    lines = out.splitlines()
    assert lines[-1] == "dir False"
    for how, line in zip(("blocking", "asyncio"), lines[:2], strict=True):
        assert line.startswith(f"{how} no socket at shm://{name}: ")
        assert (
            f"shm://NAME is per user (uid {LONER} looks in {LONER_DIR}): a server running "
            f"as another user listens in that user's directory (uid 0's /tmp/ipcwire-0: this "
            f"user cannot look inside); {SHARE}"
        ) in line, line


def test_no_hint_when_there_is_nowhere_else(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit path has nowhere else to look: the message is unix://'s alone."""
    with pytest.raises(ipcwire.errors.ConnectionRefused) as refused:
        ipcwire.connect(f"shm:///tmp/ipcwire-0/nothing-{_name()}.sock", timeout=5)
    assert "per user" not in str(refused.value)

"""A spool directory that someone else made is used only when mode= shares the spool with
them: another local user who pre-created the directories (mode 0o777) and then moved a
forged file into new/ had it consumed by the victim, with no warning; a symlinked spool
directory pointing into another tree was followed silently (helper-92). The shared spool of
mode=0o770 and a common group still works (tests/spool/test_shared_group.py).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from tests._proc import NOBODY

import ipcwire
from ipcwire import aio
from ipcwire.errors import PermissionDenied


def _squat(root: Path, *, mode: int, uid: int = NOBODY) -> Path:
    q = root / "q"
    for d in (q, q / "new", q / "cur", q / "tmp", q / "dead"):
        d.mkdir()
        os.chmod(d, mode)
        os.chown(d, uid, uid)
    return q


def _refused(url: str) -> str:
    with pytest.raises(PermissionDenied) as err:
        ipcwire.connect(url)
    with pytest.raises(PermissionDenied) as aerr:
        asyncio.run(aio.connect(url))
    assert str(err.value) == str(aerr.value)
    return str(err.value)


def test_another_users_directories_are_refused(spool_dir: Path) -> None:
    q = _squat(spool_dir, mode=0o777)
    text = _refused(f"spool://{q}")
    assert f"will not use the spool {q}" in text and "every user may add messages" in text
    for d in (q, *q.iterdir()):
        os.chmod(d, 0o770)
    text = _refused(f"spool://{q}")
    assert f"and belongs to uid {NOBODY}" in text and "mode=0o770 on every side" in text, text


def test_a_symlinked_spool_is_refused(spool_dir: Path) -> None:
    real = _squat(spool_dir, mode=0o700, uid=os.getuid())
    link = spool_dir / "link"
    link.symlink_to(real)
    text = _refused(f"spool://{link}")
    assert "is a symbolic link" in text, text


def test_own_directories_are_used(spool_dir: Path) -> None:
    q = _squat(spool_dir, mode=0o700, uid=os.getuid())
    with ipcwire.connect(f"spool://{q}") as ch:
        ch.send(b"x")
        assert ch.recv(timeout=5) == b"x"

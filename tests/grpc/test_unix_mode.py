"""grpc+unix at a path too long for the private name it is usually bound under: grpc binds
the socket in place, and until its mode is set the socket file must not be open to others
(0600 at most, as unix:// binds in place under a strict umask). With umask 0 it was 0o777
from grpc's bind to the chmod: connections made in that window survived."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import ipcwire


def test_a_socket_bound_in_place_is_0600_until_its_mode_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = str(tmp_path)
    # the real path fits sun_path (107), the private one (<dir>/.iwXXXXXXXX/s) does not
    directory = os.path.join(base, "d" * max(1, 96 - len(base) - 1))
    os.mkdir(directory)
    path = os.path.join(directory, "g.sock")
    assert len(path) <= 107 < len(directory) + 14
    chmods: list[str] = []
    monkeypatch.setattr(os, "chmod", lambda p, mode, **kw: chmods.append(str(p)))
    old = os.umask(0)
    try:
        with ipcwire.listen(f"grpc+unix://{path}", mode=0o660):
            assert chmods == [path]  # bound in place: its mode comes after, by chmod
            assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600  # what it was until then
    finally:
        os.umask(old)

"""``mode=`` and ``allow_uids=`` are for ``http+unix``. On TCP, ``mode=`` (a socket file's
permissions: there is no file) was accepted and ignored; ``allow_uids=`` was refused only once
the port was bound (the message named the bound port). Now both are refused before anything
is bound, with either API."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import ConfigurationError


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _refused(url: str, opts: dict[str, Any], match: str) -> None:
    before = _fds()
    with pytest.raises(ConfigurationError, match=match) as err:
        ipcwire.listen(url, **opts)
    assert url in str(err.value), err.value  # the URL as written: nothing was bound
    assert _fds() <= before

    async def main() -> None:
        with pytest.raises(ConfigurationError, match=match) as aerr:
            await aio.listen(url, **opts)
        assert url in str(aerr.value), aerr.value

    asyncio.run(main())
    assert _fds() <= before


@pytest.mark.parametrize("mode", [0o666, 0o600])
def test_mode_on_http_tcp_is_refused(mode: int) -> None:
    _refused("http://127.0.0.1:0/api", {"mode": mode}, r"mode= is for a socket file: http\+unix")


def test_allow_uids_on_http_tcp_is_refused_before_binding() -> None:
    _refused("http://127.0.0.1:0/api", {"allow_uids": [424242]}, r"allow_uids= needs http\+unix")


def test_http_unix_still_takes_mode(tmp_path: Path) -> None:
    path = tmp_path / "h.sock"
    with ipcwire.listen(f"http+unix://{path}", mode=0o640, allow_uids=[os.getuid()]):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    with ipcwire.listen(f"http+unix://{path}"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not path.exists()

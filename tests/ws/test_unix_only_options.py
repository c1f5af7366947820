"""``mode=`` and ``allow_uids=`` are for ``ws+unix``: on TCP (``ws://``, ``wss://``) there is
no socket file to give a mode and no peer credentials to check. Before, both were accepted and
ignored: ``listen("ws://127.0.0.1:0/x", allow_uids=[424242])`` let every local process in
(peer uid None), with either API. Now listen refuses them before anything is bound, as
``http://`` does."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from tests.ws._tls import tls_contexts

import ipcwire
from ipcwire import aio
from ipcwire.errors import ConfigurationError, PermissionDenied

OTHER_UID = 424242


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _refused(url: str, opts: dict[str, Any], match: str) -> None:
    before = _fds()
    with pytest.raises(ConfigurationError, match=match) as err:
        ipcwire.listen(url, **opts)
    # refused before binding: the URL as written (port 0), no socket left open
    assert url in str(err.value), err.value
    assert _fds() <= before

    async def main() -> None:
        with pytest.raises(ConfigurationError, match=match) as aerr:
            await aio.listen(url, **opts)
        assert url in str(aerr.value), aerr.value

    asyncio.run(main())
    assert _fds() <= before


@pytest.mark.parametrize("uids", [[OTHER_UID], [os.getuid()], []])
def test_allow_uids_on_ws_tcp_is_refused(uids: list[int]) -> None:
    _refused("ws://127.0.0.1:0/x", {"allow_uids": uids}, r"allow_uids= needs ws\+unix://")


@pytest.mark.parametrize("mode", [0o666, 0o600])
def test_mode_on_ws_tcp_is_refused(mode: int) -> None:
    _refused("ws://127.0.0.1:0/x", {"mode": mode}, r"mode= is for a socket file: ws\+unix://")


def test_wss_refuses_them_too(tmp_path: Path) -> None:
    server, _client = tls_contexts(tmp_path)
    url = "wss://127.0.0.1:0/x"
    _refused(url, {"ssl": server, "allow_uids": [OTHER_UID]}, r"allow_uids= needs ws\+unix://")
    _refused(url, {"ssl": server, "mode": 0o640}, "mode= is for a socket file")


def test_ws_unix_still_takes_them(tmp_path: Path) -> None:
    path = tmp_path / "w.sock"
    url = f"ws+unix://{path}"
    with ipcwire.listen(url, mode=0o640) as lst:
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        with ipcwire.connect(lst.url, timeout=5), lst.accept(timeout=5) as ch:
            assert ch.peer is not None and ch.peer.uid == os.getuid()
    with ipcwire.listen(url) as lst:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # the default
    with (
        ipcwire.listen(url, allow_uids=[OTHER_UID]) as lst,
        pytest.raises(PermissionDenied),
    ):
        ipcwire.connect(lst.url, timeout=5)
    assert not path.exists()

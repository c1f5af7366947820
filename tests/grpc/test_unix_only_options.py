"""``mode=`` is a ``grpc+unix`` socket file's permissions. On TCP (``grpc://``) there is no
file: it was accepted and ignored. Now listen refuses it before anything is bound, with either
API; ``grpc+unix`` still takes it."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import ConfigurationError

MATCH = r"mode= is for a socket file: grpc\+unix://"


@pytest.mark.parametrize("mode", [0o666, 0o600])
def test_mode_on_grpc_tcp_is_refused(mode: int) -> None:
    url = "grpc://127.0.0.1:0"
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(ConfigurationError, match=MATCH) as err:
        ipcwire.listen(url, mode=mode)
    assert url in str(err.value), err.value

    async def main() -> None:
        with pytest.raises(ConfigurationError, match=MATCH):
            await aio.listen(url, mode=mode)

    asyncio.run(main())
    assert set(os.listdir("/proc/self/fd")) <= before


def test_grpc_unix_still_takes_mode(tmp_path: Path) -> None:
    path = tmp_path / "g.sock"
    with ipcwire.listen(f"grpc+unix://{path}", mode=0o640):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    with ipcwire.listen(f"grpc+unix://{path}"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not path.exists()

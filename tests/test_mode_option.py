"""``mode=``, the permission bits of what a listener creates, is checked once for every
mechanism that takes it: a bad value is ConfigurationError naming the endpoint, before
anything is created. Before, ``mode="0600"`` was a bare TypeError on unix and accepted by the
spool, ``mode=2**40`` a bare OverflowError, and ``mode=-1`` made a unix socket file 0o7777."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

import pytest

import ipcwire
from ipcwire import aio
from ipcwire._core.url import parse_url
from ipcwire.errors import ConfigurationError


def _urls(tmp: Path) -> list[str]:
    return [
        f"unix://{tmp}/a.sock",
        f"fifo://{tmp}/a.fifo",
        f"shm://iw-mode-{os.getpid()}",
        f"http+unix://{tmp}/h.sock",
        f"ws+unix://{tmp}/w.sock",
        f"grpc+unix://{tmp}/g.sock",
        f"mq://iw-mode-{os.getpid()}",
        f"spool://{tmp}/spool",
    ]


BAD: list[Any] = [-1, 0o4600, 0o1777, 2**40, True, 1.5, "0600x", "", "rw-------"]


@pytest.mark.parametrize("bad", BAD, ids=repr)
def test_a_bad_mode_is_a_configuration_error_naming_the_endpoint(
    tmp_path: Path, bad: object
) -> None:
    for url in _urls(tmp_path):
        with pytest.raises(ConfigurationError, match=r"0o000 to 0o777") as err:
            ipcwire.listen(url, mode=bad)
        assert err.value.endpoint == parse_url(url).url
    assert list(tmp_path.iterdir()) == []  # nothing was created


def test_asyncio_checks_it_the_same_way(tmp_path: Path) -> None:
    async def main() -> None:
        with pytest.raises(ConfigurationError, match=r"0o000 to 0o777"):
            await aio.listen(f"unix://{tmp_path}/a.sock", mode=0o4600)

    asyncio.run(main())


@pytest.mark.parametrize("given", [0o640, "0640", "0o640", "640"])
def test_octal_digits_are_taken_as_the_number(tmp_path: Path, given: object) -> None:
    path = tmp_path / "a.sock"
    with ipcwire.listen(f"unix://{path}", mode=given):
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o640

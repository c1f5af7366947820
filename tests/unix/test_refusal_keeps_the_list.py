"""A client refused by ``allow_uids`` learns that it is not allowed, not who is.

The refusal sent over the wire read "uid 65534 ... is not in allow_uids [0, 4242]; add it
there ...": every uid the server trusts, told to one it does not. The client is told its
own uid and that it is not allowed; the server's log names the list and the fix.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest
from tests._loops import AioRun
from tests._proc import NOBODY, run_python

import ipcwire
from ipcwire import aio

TRY_AS_NOBODY = """
import ipcwire
try:
    ipcwire.connect({url!r}, timeout=5)
except ipcwire.PermissionDenied as exc:
    print(exc)
"""

ALLOWED = [os.getuid(), 4242]


def _check(told: str, caplog: pytest.LogCaptureFixture, url: str) -> None:
    assert f"uid {NOBODY}" in told and url in told, told
    assert "4242" not in told and "[" not in told, told  # not the list
    logged = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert logged, caplog.text
    assert f"allow_uids {sorted(ALLOWED)}" in logged[0], logged
    assert f"uid {NOBODY}" in logged[0] and "allow_uids=" in logged[0], logged


def test_blocking_refusal(sock_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    os.chmod(sock_dir, 0o755)
    url = f"unix://{sock_dir}/guarded.sock"
    with (
        caplog.at_level(logging.INFO, "ipcwire"),
        ipcwire.listen(url, mode=0o666, allow_uids=ALLOWED),
    ):
        told = run_python(TRY_AS_NOBODY.format(url=url), as_nobody=True)
    _check(told, caplog, url)


def test_asyncio_refusal(sock_dir: Path, caplog: pytest.LogCaptureFixture, aio_run: AioRun) -> None:
    os.chmod(sock_dir, 0o755)
    url = f"unix://{sock_dir}/guarded.sock"

    async def main() -> str:
        lst = await aio.listen(url, mode=0o666, allow_uids=ALLOWED)
        try:
            code = TRY_AS_NOBODY.format(url=url)
            return await asyncio.to_thread(run_python, code, as_nobody=True)
        finally:
            lst.close()

    with caplog.at_level(logging.INFO, "ipcwire"):
        told = aio_run(main())
    _check(told, caplog, url)

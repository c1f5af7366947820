"""A second listener at an mq:// name a live listener holds is AddressInUse naming the URL,
the holder's pid and the fix, as unix's is; blocking and asyncio.

Another process's listener: "Stop that listener (kill PID), or choose another name" (before,
it said only "mq:///app is in use: a listener in pid N ... owns the queue /app", with no fix).
This very process's (a listener still held, or one lost without closing it: a notebook's
listen cell run again): "this process already listens at URL ...: close it first", as unix,
tcp and shm say it (9833aa8); before, it sent the user to kill the program they were
running."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from tests._loops import AioRun
from tests._proc import child, wait_line

import ipcwire
from ipcwire import aio
from ipcwire.errors import AddressInUse


def _check_ours(exc: AddressInUse, url: str) -> None:
    assert exc.endpoint == url and exc.pid == os.getpid(), str(exc)
    assert str(exc) == (
        f"cannot listen at {url}: this process already listens at {url} (a listener you "
        "still hold, or one you lost without closing it): close it first"
    )


def test_blocking(mq_url: Callable[..., str]) -> None:
    url = mq_url()
    with ipcwire.listen(url):
        with pytest.raises(AddressInUse) as info:
            ipcwire.listen(url)
        _check_ours(info.value, url)


def test_asyncio(mq_url: Callable[..., str], aio_run: AioRun) -> None:
    url = mq_url()

    async def main() -> None:
        async with await aio.listen(url):
            with pytest.raises(AddressInUse) as info:
                await aio.listen(url)
            _check_ours(info.value, url)

    aio_run(main())


def test_other_process(mq_url: Callable[..., str], aio_run: AioRun) -> None:
    """Another program's listener: its pid, and how to stop it (both APIs)."""
    url = mq_url()
    code = f"""
        import sys, ipcwire
        with ipcwire.listen({url!r}):
            print("ready", flush=True)
            sys.stdin.readline()
    """
    with child(code) as proc:
        assert wait_line(proc) == "ready"
        with pytest.raises(AddressInUse) as info:
            ipcwire.listen(url)

        async def main() -> AddressInUse:
            with pytest.raises(AddressInUse) as got:
                await aio.listen(url)
            return got.value

        errors = [info.value, aio_run(main())]
        assert proc.stdin is not None
        proc.stdin.write("done\n")  # (the child closes its listener and exits)
        proc.stdin.flush()
        assert proc.wait(timeout=10) == 0
    for exc in errors:
        text = str(exc)
        assert exc.endpoint == url and exc.pid == proc.pid, text
        assert text.startswith(f"cannot listen at {url}: it is in use: a listener in pid "), text
        assert f"Stop that listener (kill {proc.pid}), or choose another name" in text, text

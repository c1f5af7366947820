"""Pickling a channel or a listener (passing it to a multiprocessing child, say) raises a
TypeError that says what to do: open it in the other process, or hand over ipcwire.pipe's
ends, which pickle. Before: "cannot pickle 'socket' object" (or '_native.Ring', or
'memoryview'), naming no way out (helper-126)."""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
from pathlib import Path

import pytest

import ipcwire
from ipcwire import aio, pipe

WORDS = "it is this process's connection, which another process cannot use"


def _nothing(_: object) -> None:
    pass


@pytest.mark.parametrize("scheme", ["unix", "tcp", "shm"])
def test_blocking(scheme: str, tmp_path: Path) -> None:
    url = "tcp://127.0.0.1:0" if scheme == "tcp" else f"{scheme}://{tmp_path}/p.sock"
    with ipcwire.listen(url) as lst:
        with pytest.raises(TypeError, match=f"cannot pickle the listener .*{WORDS}"):
            pickle.dumps(lst)
        with ipcwire.connect(lst.url, timeout=10) as ch:
            with pytest.raises(TypeError, match=f"cannot pickle the channel .*{WORDS}"):
                pickle.dumps(ch)
            peer = lst.accept(timeout=10)
            with peer, pytest.raises(TypeError, match=r"connect\(\) or listen\(\) in its target"):
                pickle.dumps(peer)
            proc = multiprocessing.get_context("spawn").Process(target=_nothing, args=(ch,))
            with pytest.raises(TypeError, match=WORDS):
                proc.start()


def test_asyncio(tmp_path: Path) -> None:
    async def main() -> None:
        async with await aio.listen(f"unix://{tmp_path}/a.sock") as lst:
            with pytest.raises(TypeError, match=f"cannot pickle the listener .*{WORDS}"):
                pickle.dumps(lst)
            async with await aio.connect(lst.url, timeout=10) as ch:
                with pytest.raises(TypeError, match=f"cannot pickle the channel .*{WORDS}"):
                    pickle.dumps(ch)

    asyncio.run(main())


def test_pipe_ends_still_pickle() -> None:
    a, b = pipe.ends()
    try:
        assert pickle.loads(pickle.dumps(a)) is not None
    finally:
        for end in (a, b):
            end.close()

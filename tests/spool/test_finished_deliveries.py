"""A channel forgets the deliveries it handed out once they are acked or released: a
consumer that runs for a long time with claim() does not keep every message it ever had."""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path

import ipcwire
from ipcwire import aio
from ipcwire.spool._consume import Claim
from ipcwire.spool.aio import AioSpoolChannel
from ipcwire.spool.blocking import SpoolChannel


def test_blocking_claims_are_let_go_once_finished(spool_dir: Path) -> None:
    url = f"spool://{spool_dir}/q"
    refs: list[weakref.ref[Claim]] = []
    with ipcwire.connect(url) as ch:
        assert isinstance(ch, SpoolChannel)
        ch.send_many([b"a", b"b", b"c"])
        for i in range(4):  # "a" is released once, then acked
            d = ch.claim(timeout=5)
            refs.append(weakref.ref(d._claim))
            if i == 0:
                d.release()
            else:
                assert d.ack()
        del d
        gc.collect()
        assert [r() for r in refs] == [None] * 4  # before: all four, until close()


def test_asyncio_claims_are_let_go_once_finished(spool_dir: Path) -> None:
    url = f"spool://{spool_dir}/q"

    async def main() -> list[weakref.ref[Claim]]:
        refs: list[weakref.ref[Claim]] = []
        async with await aio.connect(url) as ch:
            assert isinstance(ch, AioSpoolChannel)
            await ch.send_many([b"a", b"b"])
            for _ in range(2):
                d = await ch.claim(timeout=5)
                refs.append(weakref.ref(d._claim))
                assert d.ack()
            del d
            gc.collect()
            assert [r() for r in refs] == [None] * 2
        return refs

    asyncio.run(main())

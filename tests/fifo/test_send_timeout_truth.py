"""A send that times out on a FIFO nobody reads says what is true, with both APIs alike."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelBroken, Timeout

PAD = "x" * 3000  # under PIPE_BUF: each message takes a page of the pipe, which fills fast


def test_a_send_that_timed_out_was_not_sent_with_both_apis(tmp_path: Path) -> None:
    # asyncio said "a message stayed unsent for 0.1 s", yet the message was delivered once
    # the reader read again: a caller who sent it again got it twice. The blocking send said
    # "nothing was sent", and the message never came.
    url = f"fifo://{tmp_path}/full.fifo"
    with (
        ipcwire.listen(url, framing="ndjson") as listener,
        listener.accept() as reader,
        ipcwire.connect(url, framing="ndjson") as writer,
    ):
        sent = 0
        with pytest.raises(Timeout) as blocking:
            while True:
                writer.send({"n": sent, "pad": PAD}, timeout=0.1)
                sent += 1
        assert "nothing was sent" in str(blocking.value)
        for n in range(sent):
            assert reader.recv(timeout=5)["n"] == n
        writer.send({"n": "after"}, timeout=5)
        assert reader.recv(timeout=5) == {"n": "after"}  # not the one that timed out

    async def main() -> str:
        async with (
            await aio.listen(url, framing="ndjson") as listener,
            await listener.accept() as reader,
            await aio.connect(url, framing="ndjson") as writer,
        ):
            sent = 0
            with pytest.raises(Timeout) as err:
                while True:
                    await writer.send({"n": sent, "pad": PAD}, timeout=0.1)
                    sent += 1
            for n in range(sent):
                assert (await reader.recv(timeout=5))["n"] == n
            await writer.send({"n": "after"}, timeout=5)
            assert await reader.recv(timeout=5) == {"n": "after"}
            return str(err.value)

    assert asyncio.run(main()) == str(blocking.value)  # the same words


def test_a_send_cut_part_way_says_so_and_refuses_more_with_both_apis(tmp_path: Path) -> None:
    # A message bigger than the pipe, nobody reading: asyncio said "stayed unsent" while
    # its first megabyte was in the FIFO, and went on to send after it.
    url = f"fifo://{tmp_path}/cut.fifo"
    big = b"x" * (4 << 20)
    with ipcwire.listen(url, codec="raw"), ipcwire.connect(url, codec="raw") as writer:
        with pytest.raises(Timeout, match=r"timed out after \d+ bytes") as blocking:
            writer.send(big, timeout=0.1)
        with pytest.raises(ChannelBroken, match="part-way"):
            writer.send(b"more", timeout=0.1)

    async def main() -> str:
        async with (
            await aio.listen(url, codec="raw"),
            await aio.connect(url, codec="raw") as writer,
        ):
            with pytest.raises(Timeout, match=r"timed out after \d+ bytes") as err:
                await writer.send(big, timeout=0.1)
            with pytest.raises(ChannelBroken, match="part-way"):
                await writer.send(b"more", timeout=0.1)
            return str(err.value)

    words = asyncio.run(main())
    assert words.split(" after ")[0] == str(blocking.value).split(" after ")[0]
    assert words.split(" bytes")[1] == str(blocking.value).split(" bytes")[1]

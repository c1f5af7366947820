"""A message in more fragments than the library takes (4096) is refused with code 1009, as
the library does; ``recv()`` said "the connection was closed after an oversized message",
for a message of a few kilobytes, far under ``max_frame``, with nothing to do about it. It
now says what happened: too many fragments, and that the peer should send fewer."""

from __future__ import annotations

import asyncio

import pytest
from tests._loops import AioRun
from tests.ws.test_ws import _upgraded

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelBroken


def _fragment(opcode: int, fin: bool, payload: bytes = b"") -> bytes:
    """One masked client frame (zero masking key)."""
    return bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


# 5002 fragments of one message, 2 bytes in all
MANY = _fragment(2, False, b"a") + _fragment(0, False) * 5000 + _fragment(0, True, b"z")


def _says_fragments(err: ChannelBroken, url: str) -> None:
    text = str(err)
    assert url in text and "fragments" in text and "oversized" not in text, text


def test_too_many_fragments_is_named() -> None:
    with ipcwire.listen("ws://127.0.0.1:0/app", codec="bytes", close_timeout=0.2) as listener:
        peer = _upgraded(listener.url)
        with listener.accept(timeout=10) as ch, peer:
            peer.sendall(MANY)
            with pytest.raises(ChannelBroken) as info:
                ch.recv(timeout=10)
            _says_fragments(info.value, listener.url)


def test_too_many_fragments_is_named_on_asyncio(aio_run: AioRun) -> None:
    async def main() -> None:
        async with await aio.listen(
            "ws://127.0.0.1:0/app", codec="bytes", close_timeout=0.2
        ) as listener:
            peer = await asyncio.to_thread(_upgraded, listener.url)
            async with await listener.accept(timeout=10) as ch:
                with peer:
                    peer.sendall(MANY)
                    with pytest.raises(ChannelBroken) as info:
                        await ch.recv(timeout=10)
                    _says_fragments(info.value, listener.url)

    aio_run(main())

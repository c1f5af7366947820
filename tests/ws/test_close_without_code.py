"""A close frame without a status code (what a browser's ``ws.close()`` sends; 1005 "no
status received") is a clean end: ``recv()`` raises ``EndOfChannel``, as websocket.md's
table says. Before, the library's answer echoed the 1005, which ``closed_error`` took for
this side's own close code, and the peer's clean end was ``ChannelBroken`` on both APIs,
both sides."""

from __future__ import annotations

import asyncio

from tests._loops import AioRun
from tests.ws.test_ws import _masked, _upgraded
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Frame, Opcode

import ipcwire
from ipcwire import aio
from ipcwire.errors import EndOfChannel

EMPTY_CLOSE = _masked(8, b"")  # a client's close frame with no payload


def test_a_client_closing_without_a_code_ends_the_channel_cleanly() -> None:
    with ipcwire.listen("ws://127.0.0.1:0/app", close_timeout=1) as listener:
        peer = _upgraded(listener.url)
        with listener.accept(timeout=10) as ch, peer:
            peer.sendall(EMPTY_CLOSE)
            try:
                ch.recv(timeout=10)
            except EndOfChannel as exc:
                assert listener.url in str(exc)
            else:
                raise AssertionError("a message came from nowhere")


def test_a_client_closing_without_a_code_on_asyncio(aio_run: AioRun) -> None:
    async def main() -> None:
        async with await aio.listen("ws://127.0.0.1:0/app", close_timeout=1) as listener:
            peer = await asyncio.to_thread(_upgraded, listener.url)
            async with await listener.accept(timeout=10) as ch:
                with peer:
                    peer.sendall(EMPTY_CLOSE)
                    try:
                        await ch.recv(timeout=10)
                    except EndOfChannel:
                        pass
                    else:
                        raise AssertionError("a message came from nowhere")

    aio_run(main())


async def _close_without_code(ws: ServerConnection) -> None:
    ws.protocol.send_frame(Frame(Opcode.CLOSE, b""))
    ws.send_data()
    await ws.wait_closed()


def test_a_server_closing_without_a_code_ends_the_client_cleanly() -> None:
    async def main() -> None:
        async with serve(_close_without_code, "127.0.0.1", 0, close_timeout=1) as server:
            port = server.sockets[0].getsockname()[1]
            url = f"ws://127.0.0.1:{port}/"
            blocking = await asyncio.to_thread(ipcwire.connect, url, timeout=5, close_timeout=1)
            async with await aio.connect(url, timeout=5, close_timeout=1) as ch:
                try:
                    await ch.recv(timeout=10)
                except EndOfChannel:
                    pass
                else:
                    raise AssertionError("a message came from nowhere")
            with blocking:
                try:
                    await asyncio.to_thread(blocking.recv, timeout=10)
                except EndOfChannel:
                    pass
                else:
                    raise AssertionError("a message came from nowhere")

    asyncio.run(main())

"""A channel that closed itself says why: after a ``request()`` timed out (or was cancelled)
with its request out, the channel is closed so that a late reply cannot answer a later
request. Another thread (or task) sharing the channel then got a bare "unix:///... is
closed", although nobody on that thread closed it; now the ChannelClosed says which
request() closed it and that a new channel is needed. A channel its user closed still says
only that it is closed.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelClosed, Timeout


def _silent(ch: ipcwire.Channel) -> None:
    for _ in ch:  # never answers
        pass


def test_a_request_that_timed_out_is_why_the_channel_is_closed(tmp_path: Path) -> None:
    with ipcwire.listen(f"unix://{tmp_path}/s.sock") as lst:
        threading.Thread(target=lst.serve, args=(_silent,), daemon=True).start()
        ch = ipcwire.connect(lst.url, timeout=10)
        with pytest.raises(Timeout):
            ch.request(b"slow", timeout=0.2)
        for attempt in (lambda: ch.request(b"fast"), lambda: ch.send(b"x"), ch.recv):
            with pytest.raises(ChannelClosed) as err:
                attempt()
            text = str(err.value)
            assert text.startswith(f"{lst.url} is closed: a request() on it got no reply "), text
            assert "within 0.2 s" in text and "connect again" in text, text
            assert err.value.endpoint == lst.url
        ch.close()
        with pytest.raises(ChannelClosed) as err:  # closing again keeps the reason
            ch.send(b"x")
        assert "within 0.2 s" in str(err.value)


def test_a_channel_its_user_closed_says_only_closed(tmp_path: Path) -> None:
    with ipcwire.listen(f"unix://{tmp_path}/s.sock") as lst:
        ch = ipcwire.connect(lst.url, timeout=10)
        ch.close()
        with pytest.raises(ChannelClosed) as err:
            ch.request(b"x", timeout=0.2)
        assert str(err.value) == f"{lst.url} is closed"


def test_asyncio_timed_out_and_cancelled_requests_say_why(tmp_path: Path) -> None:
    async def silent(ch: aio.AioChannel) -> None:
        async for _ in ch:
            pass

    async def main() -> None:
        async with await aio.listen(f"unix://{tmp_path}/s.sock") as lst:
            task = asyncio.create_task(lst.serve(silent))
            ch = await aio.connect(lst.url, timeout=10)
            with pytest.raises(Timeout):
                await ch.request(b"slow", timeout=0.2)
            with pytest.raises(ChannelClosed, match=r"is closed: a request\(\) on it got no "):
                await ch.send(b"x")
            ch2 = await aio.connect(lst.url, timeout=10)
            pending = asyncio.create_task(ch2.request(b"slow", timeout=30))
            await asyncio.sleep(0)  # one turn of the loop: the request task sends
            assert ch2.statistics().messages_sent == 1  # its request is out
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending
            with pytest.raises(ChannelClosed) as err:
                await ch2.recv()
            assert "was cancelled (CancelledError) with its request out" in str(err.value)
            await ch.aclose()
            await ch2.aclose()
            task.cancel()

    asyncio.run(main())


@pytest.mark.parametrize(
    "url",
    [
        "ws://127.0.0.1:0/x",
        "http://127.0.0.1:0/api",
        f"shm://iwcr{uuid.uuid4().hex[:8]}",
        "udp://127.0.0.1:0",
    ],
    ids=lambda url: url.split(":")[0],  # (the same on every collection: the shm name is random)
)
def test_websocket_http_shm_and_udp_channels_say_why_too(url: str) -> None:
    """ws, http, shm, udp: the same words, blocking and asyncio (they said only "URL is
    closed")."""
    with ipcwire.listen(url) as lst:
        threading.Thread(target=lst.serve, args=(_silent,), daemon=True).start()
        ch = ipcwire.connect(lst.url, timeout=10)
        with pytest.raises(Timeout):
            ch.request(b"slow", timeout=0.2)
        with pytest.raises(ChannelClosed, match=r"is closed: a request\(\) on it got no "):
            ch.send(b"x")

    async def main() -> None:
        async def silent(ch: aio.AioChannel) -> None:
            async for _ in ch:
                pass

        async with await aio.listen(url) as lst:
            task = asyncio.create_task(lst.serve(silent))
            ch = await aio.connect(lst.url, timeout=10)
            with pytest.raises(Timeout):
                await ch.request(b"slow", timeout=0.2)
            with pytest.raises(ChannelClosed, match=r"is closed: a request\(\) on it got no "):
                await ch.recv()
            await ch.aclose()
            task.cancel()

    asyncio.run(main())

"""An SSE server whose handler (or ``with`` block) fails ends the stream as a failure: its
end event carries the exception's type, and the client's channel ends with ChannelBroken
naming it, after every event before. A clean end is still EndOfChannel; curl sees the end
event's JSON."""

from __future__ import annotations

import asyncio
import subprocess
import threading

import pytest

import ipcwire
from ipcwire import aio
from ipcwire._core.codecs import get_codec
from ipcwire.aio.channel import AioChannel
from ipcwire.channel import Channel
from ipcwire.errors import ChannelBroken, EndOfChannel
from ipcwire.options import ChannelOptions
from ipcwire.sse._client import ClientCore, SseAddress
from ipcwire.sse._http import ResponseHead

URL = "sse+http://127.0.0.1:0/events"


FAIL = threading.Event()  # whether _handler fails (set by each test before it serves)


def _handler(ch: Channel) -> None:
    ch.send(b"first")
    ch.send(b"second")
    if FAIL.is_set():
        raise ArithmeticError("inner detail")


@pytest.mark.parametrize("fail", [False, True])
def test_blocking_handler_failure_reaches_the_client(fail: bool) -> None:
    if fail:
        FAIL.set()
    else:
        FAIL.clear()
    with ipcwire.listen(URL) as lst:
        t = threading.Thread(target=lst.serve, args=(_handler,), daemon=True)
        t.start()
        with ipcwire.connect(lst.url, timeout=10) as ch:
            assert ch.recv(timeout=10) == b"first"
            assert ch.recv(timeout=10) == b"second"
            if fail:
                with pytest.raises(ChannelBroken, match="ArithmeticError raised") as info:
                    ch.recv(timeout=10)
                assert "inner detail" not in str(info.value)
            else:
                with pytest.raises(EndOfChannel):
                    ch.recv(timeout=10)
        lst.close()
        t.join(10)


@pytest.mark.parametrize("fail", [False, True])
def test_asyncio_handler_failure_reaches_the_client(fail: bool) -> None:
    async def handler(ch: AioChannel) -> None:
        await ch.send(b"first")
        if fail:
            raise LookupError("inner detail")

    async def main() -> None:
        async with await aio.listen(URL) as lst:
            task = asyncio.create_task(lst.serve(handler))
            async with await aio.connect(lst.url, timeout=10) as ch:
                assert await ch.recv(timeout=10) == b"first"
                want = ChannelBroken if fail else EndOfChannel
                with pytest.raises(want, match="LookupError raised" if fail else "closed"):
                    await ch.recv(timeout=10)
            await lst.aclose()
            await task

    asyncio.run(main())


def test_curl_reads_the_failure_in_the_end_event() -> None:
    FAIL.set()
    with ipcwire.listen(URL) as lst:
        t = threading.Thread(target=lst.serve, args=(_handler,), daemon=True)
        t.start()
        url = "http" + str(lst.url).removeprefix("sse+http")
        out = subprocess.run(
            ["curl", "-sN", "--max-time", "10", url], capture_output=True, text=True, check=True
        ).stdout
        assert "event: ipcwire-end" in out
        assert '"failed": "ArithmeticError raised while the channel was open"' in out
        lst.close()
        t.join(10)


def test_a_resume_after_a_lost_failed_end_still_says_it_failed() -> None:
    """A client that lost the end event with its connection comes back and gets 204 (do not
    reconnect); the 204 carries the failure (X-Ipcwire-Failed), so ipcwire's client still
    raises ChannelBroken, not the EndOfChannel a bare 204 means."""
    FAIL.set()
    with ipcwire.listen(URL) as lst:
        t = threading.Thread(target=lst.serve, args=(_handler,), daemon=True)
        t.start()
        url = "http" + str(lst.url).removeprefix("sse+http")
        first = subprocess.run(
            ["curl", "-sN", "--max-time", "10", url], capture_output=True, text=True, check=True
        ).stdout
        last = [line for line in first.splitlines() if line.startswith("id: ")][-1][4:]
        again = subprocess.run(
            ["curl", "-si", "--max-time", "10", "-H", f"Last-Event-ID: {last}", url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert again.startswith("HTTP/1.1 204")
        assert "X-Ipcwire-Failed: ArithmeticError%20raised%20while" in again
        lst.close()
        t.join(10)
    core = ClientCore(
        ChannelOptions(url=URL, codec=get_codec("bytes", authenticated=False)),
        SseAddress(False, "127.0.0.1", 1, "/events"),
        headers=None,
        last_event_id=None,
        allow_gaps=False,
        retry=0.5,
        retry_for=10.0,
    )
    failed = ResponseHead(204, "No Content", {"x-ipcwire-failed": "KeyError%20raised%0a"})
    assert core.accept_head(failed, b"") is False
    assert isinstance(core.final, ChannelBroken) and "KeyError raised?" in str(core.final)
    assert core.accept_head(ResponseHead(204, "No Content", {}), b"") is False
    assert isinstance(core.final, EndOfChannel)

"""A client killed after it made its pair of queues but before it announced them (its
connect waits in the announcement while other clients fill the listener's queue, or the
moment between the two) leaves the pair and its end pipe behind, under names only that
client knew. The next connect to the same listener name removes those of clients whose
process is gone, and leaves those of live clients alone, with both APIs."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import posix_ipc
import pytest
from tests._loops import AioRun
from tests._proc import child, kill9, wait_line
from tests.mq._pairs import apair, pair

from ipcwire.mq._ends import end_pipe_path

# A client's first step of connect, in a child process: the pair (and its end pipe) made,
# nothing announced; it prints the pair's up name and waits.
MADE_PAIR = """
import sys
from ipcwire._core.url import parse_url
from ipcwire.mq._client import ClientSession
from ipcwire.options import ChannelOptions
url = sys.argv[1] if len(sys.argv) > 1 else {url!r}
opts = ChannelOptions.build(parse_url(url), {{}})
s = ClientSession({name!r}, opts, maxmsg=2, msgsize=512, mode=0o600)
print(s.up.name, flush=True)
sys.stdin.read()
"""


def _exists(queue: str) -> bool:
    try:
        posix_ipc.MessageQueue(queue).close()
    except posix_ipc.ExistentialError:
        return False
    return True


def _left(up: str) -> list[str]:
    names = [up, up.removesuffix(".up") + ".dn"]
    left = [n for n in names if _exists(n)]
    return left + ([end_pipe_path(up)] if os.path.exists(end_pipe_path(up)) else [])


def _remove(up: str) -> None:
    for n in (up, up.removesuffix(".up") + ".dn"):
        try:
            posix_ipc.unlink_message_queue(n)
        except posix_ipc.ExistentialError:
            pass
    if os.path.exists(end_pipe_path(up)):
        os.unlink(end_pipe_path(up))


@pytest.fixture
def made(mq_url: Callable[..., str]) -> Iterator[tuple[str, str, str]]:
    """The URL, the pair of a client killed after making it, and that of a live one."""
    url = mq_url()
    name = url.removeprefix("mq://")
    code = MADE_PAIR.format(url=url, name=name)
    with child(code) as dead, child(code) as live:
        dead_up, live_up = wait_line(dead), wait_line(live)
        try:
            assert _left(dead_up) and _left(live_up)
            kill9(dead)
            yield url, dead_up, live_up
        finally:
            _remove(dead_up)
            _remove(live_up)


def test_blocking(made: tuple[str, str, str]) -> None:
    url, dead_up, live_up = made
    listener, client, server = pair(url)
    with listener, client, server:
        client.send(b"x")
        assert server.recv(timeout=5) == b"x"
    assert _left(dead_up) == []
    assert len(_left(live_up)) == 3


def test_asyncio(made: tuple[str, str, str], aio_run: AioRun) -> None:
    url, dead_up, live_up = made

    async def main() -> None:
        listener, client, server = await apair(url)
        async with listener, client, server:
            await client.send(b"x")
            assert await server.recv(timeout=5) == b"x"

    aio_run(main())
    assert _left(dead_up) == []
    assert len(_left(live_up)) == 3

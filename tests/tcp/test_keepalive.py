"""TCP keepalive: a peer whose machine or network went away is noticed, as ChannelBroken.

Before, a tcp:// connection had SO_KEEPALIVE off on both ends and ``keepalive=`` was an
unknown option: a server whose client vanished (its link went down, then it was killed)
kept its handler blocked in ``recv()`` for ever. Now both ends probe an idle connection
(default: after 60 s, every 10 s, 3 probes) and the kernel's ETIMEDOUT is ChannelBroken
saying the peer stopped answering, never Timeout (which leaves the channel usable).

The dead peer is real: a process in a network namespace of its own, joined to this one by a
veth pair whose link is set down (nothing more reaches it, and it sends nothing, not even a
reset), with ``keepalive=1`` so that the probes give it up in about 4 s. Both sides of a
connection, both APIs (asyncio on each loop the tests run).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import pytest
from tests._loops import AioRun
from tests._proc import wait_line

import ipcwire
from ipcwire import aio
from ipcwire._stream.aio import AioStreamChannel
from ipcwire.errors import ChannelBroken, ConfigurationError, Timeout

TOKEN = "keepalive-test"
DEAD = "the peer stopped answering"


@dataclass(frozen=True)
class Net:
    """A namespace ``ns`` reached at ``peer_ip`` through a veth pair; ``here_ip`` is this
    side's address, ``link`` the namespace's end of the pair."""

    ns: str
    link: str
    here_ip: str
    peer_ip: str
    here_link: str

    def pin_addresses(self) -> None:
        """Permanent neighbour entries both ways: once the link is down, nothing reports the
        peer's address unreachable (no ARP request goes unanswered), so the kernel's error
        is ETIMEDOUT; without them it is EHOSTUNREACH, what it last heard (a failed ARP)."""
        mac = {}
        for ns, link in (("", self.here_link), (self.ns, self.link)):
            ns_args = ["-n", ns] if ns else []
            out = subprocess.run(
                ["ip", *ns_args, "-o", "link", "show", link],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            mac[link] = out.split("link/ether ", 1)[1].split()[0]
        for ns_args, ip, link, via in (
            ([], self.peer_ip, self.here_link, self.link),
            (["-n", self.ns], self.here_ip, self.link, self.here_link),
        ):
            _ip(
                *ns_args,
                "neigh",
                "replace",
                ip,
                "lladdr",
                mac[via],
                "nud",
                "permanent",
                "dev",
                link,
            )


def _all_acked(*socks: Any) -> None:
    """Wait until everything these sockets sent was acknowledged (SIOCOUTQ, alias TIOCOUTQ,
    is 0): keepalive probes only go out then; data left to resend is given up only after
    about 15 minutes (ipcwire does not set TCP_USER_TIMEOUT, see tcp.md). A bounded poll:
    an acknowledgement can be waited on no other way."""
    deadline = time.monotonic() + 10
    for sock in socks:
        while True:
            (queued,) = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))
            if queued == 0:
                break
            assert time.monotonic() < deadline, f"{queued} bytes never acknowledged"
            time.sleep(0.005)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def net() -> Iterator[Net]:
    tag = uuid.uuid4().hex[:8]
    n = os.getpid() % 16384  # a /30 of 198.18.0.0/16 (RFC 2544's benchmark range)
    base = f"198.18.{n * 4 // 256}.{n * 4 % 256}"
    a, b = base.rsplit(".", 1)[0], int(base.rsplit(".", 1)[1])
    here, peer = f"{a}.{b + 1}", f"{a}.{b + 2}"
    ns, here_link, peer_link = f"iwka-{tag}", f"iwa{tag}", f"iwb{tag}"
    _ip("netns", "add", ns)
    try:
        _ip("link", "add", here_link, "type", "veth", "peer", "name", peer_link)
        _ip("link", "set", peer_link, "netns", ns)
        _ip("addr", "add", f"{here}/30", "dev", here_link)
        _ip("link", "set", here_link, "up")
        _ip("-n", ns, "addr", "add", f"{peer}/30", "dev", peer_link)
        _ip("-n", ns, "link", "set", peer_link, "up")
        yield Net(ns, peer_link, here, peer, here_link)
    finally:
        subprocess.run(["ip", "link", "del", here_link], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


# The peer, in the namespace: an echo server (its URL is its ready line, printed once its
# own request to our server has its reply), and a client of our server.
PEER = """
import sys, threading, ipcwire
lst = ipcwire.listen("tcp://{ip}:0", token={token!r})
def serve():
    ch = lst.accept(timeout=30)
    for m in ch:
        ch.send(m)
threading.Thread(target=serve, daemon=True).start()
ch = ipcwire.connect(sys.argv[1], token={token!r}, timeout=10)
assert ch.request(b"hello", timeout=10) == b"hello"
print(lst.url, flush=True)
sys.stdin.read()
"""


@pytest.fixture
def peer_process(net: Net) -> Iterator[Any]:
    """``start(url)``: the peer process in ``net``'s namespace, a client of ``url``."""
    procs: list[subprocess.Popen[str]] = []

    def start(url: str) -> subprocess.Popen[str]:
        code = PEER.format(ip=net.peer_ip, token=TOKEN)
        proc = subprocess.Popen(
            ["ip", "netns", "exec", net.ns, sys.executable, "-c", code, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in procs:
            proc.kill()
            proc.communicate(timeout=20)


def _assert_dead_peer(
    exc: BaseException | None, url: str, code: int | tuple[int, ...] | None = None
) -> None:
    """``exc`` says that the peer at ``url`` stopped answering (after the kernel's ``code``,
    or one of them, when given)."""
    assert isinstance(exc, ChannelBroken), repr(exc)
    assert not isinstance(exc, Timeout)
    assert url in str(exc) and DEAD in str(exc), str(exc)
    if code is not None:
        codes = code if isinstance(code, tuple) else (code,)
        assert isinstance(exc.__cause__, OSError) and exc.__cause__.errno in codes, repr(
            exc.__cause__
        )


@pytest.mark.parametrize("pinned", [True, False], ids=["ETIMEDOUT", "EHOSTUNREACH"])
def test_blocking_a_vanished_peer_is_channel_broken(
    net: Net, peer_process: Any, pinned: bool
) -> None:
    if pinned:
        net.pin_addresses()
    with ipcwire.listen(f"tcp://{net.here_ip}:0", token=TOKEN, keepalive=1) as lst:
        proc = peer_process(lst.url)
        srv = lst.accept(timeout=20)
        srv.send(srv.recv(timeout=10))
        peer_url = wait_line(proc)
        cli = ipcwire.connect(f"{peer_url}?keepalive=1", token=TOKEN)  # (the URL's query)
        with srv, cli:
            assert cli.request(b"x", timeout=10) == b"x"
            _all_acked(srv._stream, cli._stream)  # type: ignore[attr-defined]
            _ip("-n", net.ns, "link", "set", net.link, "down")  # the peer's network is gone
            ended: dict[str, BaseException | None] = {}

            def handler() -> None:  # the finding's handler
                try:
                    for m in srv:
                        srv.send(m)
                    ended["server"] = None
                except BaseException as exc:
                    ended["server"] = exc

            def client() -> None:
                try:
                    ended["client"] = cli.recv()
                except BaseException as exc:
                    ended["client"] = exc

            threads = [threading.Thread(target=f, daemon=True) for f in (handler, client)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(20)
            assert ended.keys() == {"server", "client"}, f"still blocked: {ended}"
            # (without neighbour entries the kernel may report either: the probes time out,
            # or the address lookup fails first)
            code = errno.ETIMEDOUT if pinned else (errno.ETIMEDOUT, errno.EHOSTUNREACH)
            _assert_dead_peer(ended["server"], lst.url, code)
            _assert_dead_peer(ended["client"], peer_url, code)
            for ch, url in ((srv, lst.url), (cli, peer_url)):
                with pytest.raises(ChannelBroken) as info:
                    ch.send(b"late")
                _assert_dead_peer(info.value, url)


def test_asyncio_a_vanished_peer_is_channel_broken(
    net: Net, peer_process: Any, aio_run: AioRun
) -> None:
    net.pin_addresses()  # (ETIMEDOUT)

    async def main() -> None:
        async with await aio.listen(f"tcp://{net.here_ip}:0", token=TOKEN, keepalive=1) as lst:
            proc = peer_process(lst.url)
            srv = await lst.accept(timeout=20)
            await srv.send(await srv.recv(timeout=10))
            peer_url = await asyncio.to_thread(wait_line, proc)
            cli = await aio.connect(peer_url, token=TOKEN, keepalive=1)
            async with srv, cli:
                assert await cli.request(b"x", timeout=10) == b"x"
                socks = []
                for ch in (srv, cli):
                    transport = cast(AioStreamChannel, ch)._transport
                    assert transport is not None
                    socks.append(transport.get_extra_info("socket"))
                _all_acked(*socks)
                _ip("-n", net.ns, "link", "set", net.link, "down")

                async def handler() -> BaseException | None:
                    try:
                        async for m in srv:
                            await srv.send(m)
                    except ChannelBroken as exc:
                        return exc
                    return None

                async def client() -> BaseException | None:
                    try:
                        await cli.recv()
                    except ChannelBroken as exc:
                        return exc
                    return None

                ended = await asyncio.wait_for(asyncio.gather(handler(), client()), 20)
                _assert_dead_peer(ended[0], lst.url, errno.ETIMEDOUT)
                _assert_dead_peer(ended[1], peer_url, errno.ETIMEDOUT)
                for ch, url in ((srv, lst.url), (cli, peer_url)):
                    with pytest.raises(ChannelBroken) as info:
                        await ch.send(b"late")
                    _assert_dead_peer(info.value, url)

    aio_run(main())


# -- the socket options ---------------------------------------------------------------------


def _options(sock: Any) -> tuple[int, int, int, int]:
    """SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT of ``sock``."""
    tcp = socket.IPPROTO_TCP
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        sock.getsockopt(tcp, socket.TCP_KEEPIDLE),
        sock.getsockopt(tcp, socket.TCP_KEEPINTVL),
        sock.getsockopt(tcp, socket.TCP_KEEPCNT),
    )


def _blocking_options(url: str, **kw: Any) -> list[tuple[int, int, int, int]]:
    """The options of the accepted and the connected socket, listening and connecting at
    ``url`` (its query included) with ``kw``."""
    with ipcwire.listen(url, **kw) as lst:
        box: list[ipcwire.Channel] = []
        t = threading.Thread(target=lambda: box.append(lst.accept(timeout=10)))
        t.start()
        port = lst.url.rsplit(":", 1)[1]
        with ipcwire.connect(url.replace(":0", f":{port}", 1), **kw) as ch:
            t.join()
            with box[0]:
                out = []
                for c in (box[0], ch):
                    sock = socket.socket(fileno=c.fileno())  # type: ignore[attr-defined]
                    try:
                        out.append(_options(sock))
                    finally:
                        sock.detach()
                return out


OFF_IDLE = (0,)  # SO_KEEPALIVE off (the other values are then the kernel's, unused)


@pytest.mark.parametrize(
    ("url", "kw", "expected"),
    [
        ("tcp://127.0.0.1:0", {}, (1, 60, 10, 3)),  # the default
        ("tcp://127.0.0.1:0?keepalive=30", {}, (1, 30, 10, 3)),
        ("tcp://127.0.0.1:0", {"keepalive": 5}, (1, 5, 5, 3)),
        ("tcp://127.0.0.1:0", {"keepalive": 2.5}, (1, 3, 3, 3)),  # whole seconds, up
        ("tcp://127.0.0.1:0?keepalive=30", {"keepalive": 20}, (1, 20, 10, 3)),  # kw wins
        ("tcp://127.0.0.1:0", {"keepalive": None}, OFF_IDLE),
        ("tcp://127.0.0.1:0", {"keepalive": 0}, OFF_IDLE),
        ("tcp://127.0.0.1:0?keepalive=none", {}, OFF_IDLE),
    ],
)
def test_blocking_keepalive_options(url: str, kw: dict[str, Any], expected: tuple[int]) -> None:
    for opts in _blocking_options(url, **kw):
        assert opts[: len(expected)] == expected


def test_asyncio_keepalive_options(aio_run: AioRun) -> None:
    async def options(**kw: Any) -> list[tuple[int, int, int, int]]:
        async with (
            await aio.listen("tcp://127.0.0.1:0", **kw) as lst,
            await aio.connect(lst.url, **kw) as ch,
            await lst.accept(timeout=10) as s,
        ):
            out = []
            for c in (s, ch):
                transport = cast(AioStreamChannel, c)._transport
                assert transport is not None
                out.append(_options(transport.get_extra_info("socket")))
            return out

    assert aio_run(options()) == [(1, 60, 10, 3)] * 2
    assert aio_run(options(keepalive=7)) == [(1, 7, 7, 3)] * 2
    assert [o[0] for o in aio_run(options(keepalive=None))] == [0, 0]


@pytest.mark.parametrize("bad", [-1, "soon", float("nan"), float("inf"), True])
def test_a_bad_keepalive_is_refused(bad: object, aio_run: AioRun) -> None:
    for make in (
        lambda: ipcwire.connect("tcp://127.0.0.1:1", keepalive=bad),
        lambda: ipcwire.listen("tcp://127.0.0.1:0", keepalive=bad),
    ):
        with pytest.raises(ConfigurationError, match=r"keepalive=.*None \(or 0\) to turn"):
            make()

    async def main() -> None:
        with pytest.raises(ConfigurationError, match="keepalive="):
            await aio.connect("tcp://127.0.0.1:1", keepalive=bad)
        with pytest.raises(ConfigurationError, match="keepalive="):
            await aio.listen("tcp://127.0.0.1:0", keepalive=bad)

    aio_run(main())
    with pytest.raises(ConfigurationError, match="keepalive="):
        ipcwire.connect("tcp://127.0.0.1:1?keepalive=soon")

"""The bare libraries as ``ipcwire bench`` baselines: ``raw/http`` and ``raw/http/asyncio``
(the ids the ipcwire HTTP rows compare with).

An aiohttp server and an httpx client used directly, with no ipcwire: process B POSTs each
message to ``/echo``; in a round trip process A's side answers the POST with the message it
sends back (so ``send`` then ``recv`` on side B is one HTTP exchange), in a throughput run the
server answers 204 as soon as it has the body. ipcwire's channel packs what is queued into one
POST instead, so its throughput ratio to this baseline is marked not comparable (``unequal``);
round trips compare. Side A is blocking (aiohttp on its own loop
thread, handing requests over through a queue) or asyncio, as for ipcwire's own rows.
Imported by the bench when listed in ``CONTENDER_MODULES``; it registers its contenders.
"""

from __future__ import annotations

import asyncio
import queue
import socket
import threading
from collections import deque
from typing import Any

from ipcwire.bench.contender import Contender, Task, register_contender

__all__ = ["CONTENDERS"]


def _app(task: Task, deliver: Any) -> Any:
    """aiohttp's low-level server: one handler, no router."""
    from aiohttp import web

    one_way = task.kind == "throughput"

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        body = await request.content.read()
        if one_way:
            deliver(body, None)
            return web.Response(status=204)
        fut = asyncio.get_running_loop().create_future()
        deliver(body, fut)
        return web.Response(body=await fut, content_type="application/octet-stream")

    return web.Server(handle, access_log=None)


def _listen_socket() -> socket.socket:
    # IPPROTO_TCP as getaddrinfo gives it (what aiohttp's own sites and create_server(host,
    # port) use): asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and without
    # it aiohttp's separate header and body writes stall on Nagle and delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


class _Link:
    """Side A, blocking: requests arrive through a queue; ``send`` answers the last one."""

    def __init__(self, inbox: queue.SimpleQueue[Any], loop: asyncio.AbstractEventLoop) -> None:
        self._inbox = inbox
        self._loop = loop
        self._pending: Any = None

    def recv(self) -> bytes:
        body, self._pending = self._inbox.get()
        return body  # type: ignore[no-any-return]

    def send(self, message: bytes) -> None:
        fut, self._pending = self._pending, None
        self._loop.call_soon_threadsafe(fut.set_result, bytes(message))

    def close(self) -> None:
        pass


class _Acceptor:
    def __init__(self, task: Task) -> None:
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._loop = asyncio.new_event_loop()
        sock = _listen_socket()
        self.address = f"http://127.0.0.1:{sock.getsockname()[1]}/echo"
        threading.Thread(target=self._loop.run_forever, daemon=True).start()

        async def start() -> Any:
            server = _app(task, lambda body, fut: self._inbox.put((body, fut)))
            return await asyncio.get_running_loop().create_server(server, sock=sock)

        self._server = asyncio.run_coroutine_threadsafe(start(), self._loop).result(10)

    def accept(self) -> _Link:
        return _Link(self._inbox, self._loop)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)


def side_a(task: Task, shared: object) -> _Acceptor:
    return _Acceptor(task)


class _Client:
    """Side B, blocking: ``send`` is one POST; its response body is what ``recv`` returns."""

    def __init__(self, address: str) -> None:
        import httpx

        self._client = httpx.Client(timeout=30)
        self._url = address
        self._replies: deque[bytes] = deque()

    def send(self, message: bytes) -> None:
        r = self._client.post(self._url, content=bytes(message))
        if r.status_code == 200:
            self._replies.append(r.content)

    def recv(self) -> bytes:
        return self._replies.popleft()

    def close(self) -> None:
        self._client.close()


def side_b(task: Task, address: str, shared: object) -> _Client:
    return _Client(address)


class _AioLink:
    def __init__(self, inbox: asyncio.Queue[Any]) -> None:
        self._inbox = inbox
        self._pending: Any = None

    async def recv(self) -> bytes:
        body, self._pending = await self._inbox.get()
        return body  # type: ignore[no-any-return]

    async def send(self, message: bytes) -> None:
        fut, self._pending = self._pending, None
        fut.set_result(bytes(message))

    async def aclose(self) -> None:
        pass


class _AioAcceptor:
    def __init__(self, server: Any, address: str, inbox: asyncio.Queue[Any]) -> None:
        self._server = server
        self.address = address
        self._inbox = inbox

    async def accept(self) -> _AioLink:
        return _AioLink(self._inbox)

    async def aclose(self) -> None:
        self._server.close()


async def aio_side_a(task: Task, shared: object) -> _AioAcceptor:
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    sock = _listen_socket()
    server = _app(task, lambda body, fut: inbox.put_nowait((body, fut)))
    srv = await asyncio.get_running_loop().create_server(server, sock=sock)
    return _AioAcceptor(srv, f"http://127.0.0.1:{sock.getsockname()[1]}/echo", inbox)


class _AioClient:
    def __init__(self, address: str) -> None:
        import httpx

        self._client = httpx.AsyncClient(timeout=30)
        self._url = address
        self._replies: deque[bytes] = deque()

    async def send(self, message: bytes) -> None:
        r = await self._client.post(self._url, content=bytes(message))
        if r.status_code == 200:
            self._replies.append(r.content)

    async def recv(self) -> bytes:
        return self._replies.popleft()

    async def aclose(self) -> None:
        await self._client.aclose()


async def aio_side_b(task: Task, address: str, shared: object) -> _AioClient:
    return _AioClient(address)


# Why a throughput ratio to this baseline is not a comparison: equal work would mean this
# baseline queueing and packing messages as ipcwire's channel does, which is ipcwire's own
# design rewritten, no longer the libraries used directly.
_UNEQUAL = (
    "ipcwire's HTTP channel packs whatever is queued into one POST, while the raw baseline "
    "posts each message and waits for its answer, so the ratio counts requests saved, not "
    "ipcwire's overhead (round trips, one message per POST on both, do compare)"
)


def _contender(api: str) -> Contender:
    aio = api == "asyncio"
    return Contender(
        id="raw/http" + ("/asyncio" if aio else ""),
        title="aiohttp server + httpx client" + (", asyncio" if aio else ""),
        group="baseline",
        mechanism="http",
        api="asyncio" if aio else "blocking",
        side_a=aio_side_a if aio else side_a,
        side_b=aio_side_b if aio else side_b,
        framing="HTTP/1.1 POST",
        overhead=None,
        requires=("aiohttp", "httpx"),
        note="aiohttp's low-level server and httpx used directly: one POST per message",
        unequal={"throughput": _UNEQUAL},
    )


CONTENDERS = (_contender("blocking"), _contender("asyncio"))
for _c in CONTENDERS:
    register_contender(_c)

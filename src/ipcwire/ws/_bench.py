"""The bare websockets library as ``ipcwire bench`` baselines: ``raw/ws``, ``raw/ws/asyncio``,
``raw/ws+unix``, ``raw/ws+unix/asyncio`` (the ids the ipcwire WebSocket rows compare with).

The same library with the same settings as ipcwire's driver (no compression, keepalive on),
used directly: ``send``/``recv`` of bytes on a ``websockets.sync`` or ``websockets.asyncio``
connection, so the ratio is what ipcwire adds on top of websockets. Imported by the bench
(listed in ``CONTENDER_MODULES``); it registers its contenders when imported.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any

from ipcwire.aio._read_size import bound_reads
from ipcwire.bench.contender import Contender, Task, register_contender

__all__ = ["CONTENDERS"]

_MAX = 2**27  # as large as any bench message


class _Link:
    """One side of a bare websockets.sync connection."""

    def __init__(self, conn: Any, done: threading.Event | None = None) -> None:
        self._conn = conn
        self._done = done
        self.send = conn.send
        self.recv = conn.recv  # bound, like send: no method of ours between the two

    def close(self) -> None:
        self._conn.close()
        if self._done is not None:
            self._done.set()


class _Acceptor:
    def __init__(self, server: Any, address: str, ready: queue.SimpleQueue[_Link]) -> None:
        self._server = server
        self.address = address
        self._ready = ready
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def accept(self) -> _Link:
        return self._ready.get(timeout=30)

    def close(self) -> None:
        self._server.shutdown()


def side_a(task: Task, shared: object) -> _Acceptor:
    from websockets.sync.server import serve, unix_serve

    ready: queue.SimpleQueue[_Link] = queue.SimpleQueue()

    def handler(conn: Any) -> None:
        done = threading.Event()
        ready.put(_Link(conn, done))
        done.wait()

    opts: dict[str, Any] = {"compression": None, "max_size": _MAX}
    if task.contender.options.get("unix"):
        path = f"{task.workdir}/raw-ws{task.serial}.sock"
        return _Acceptor(unix_serve(handler, path, **opts), path, ready)
    server = serve(handler, "127.0.0.1", 0, **opts)
    return _Acceptor(server, f"ws://127.0.0.1:{server.socket.getsockname()[1]}/", ready)


def side_b(task: Task, address: str, shared: object) -> _Link:
    from websockets.sync.client import connect, unix_connect

    opts: dict[str, Any] = {"compression": None, "max_size": _MAX, "legacy": True}
    if task.contender.options.get("unix"):
        return _Link(unix_connect(address, **opts))
    return _Link(connect(address, **opts))


class _AioLink:
    def __init__(self, conn: Any, done: asyncio.Event | None = None) -> None:
        bound_reads(conn.transport)  # as ipcwire's: no mmap per read (ipcwire.aio._read_size)
        self._conn = conn
        self._done = done
        self.send = conn.send
        self.recv = conn.recv

    async def aclose(self) -> None:
        await self._conn.close()
        if self._done is not None:
            self._done.set()


class _AioAcceptor:
    def __init__(self, server: Any, address: str, ready: asyncio.Queue[_AioLink]) -> None:
        self._server = server
        self.address = address
        self._ready = ready

    async def accept(self) -> _AioLink:
        return await asyncio.wait_for(self._ready.get(), 30)

    async def aclose(self) -> None:
        self._server.close()
        await self._server.wait_closed()


async def aio_side_a(task: Task, shared: object) -> _AioAcceptor:
    from websockets.asyncio.server import serve, unix_serve

    ready: asyncio.Queue[_AioLink] = asyncio.Queue()

    async def handler(conn: Any) -> None:
        done = asyncio.Event()
        ready.put_nowait(_AioLink(conn, done))
        await done.wait()

    opts: dict[str, Any] = {"compression": None, "max_size": _MAX}
    if task.contender.options.get("unix"):
        path = f"{task.workdir}/raw-ws{task.serial}.sock"
        return _AioAcceptor(await unix_serve(handler, path, **opts), path, ready)
    server = await serve(handler, "127.0.0.1", 0, **opts)
    port = server.sockets[0].getsockname()[1]
    return _AioAcceptor(server, f"ws://127.0.0.1:{port}/", ready)


async def aio_side_b(task: Task, address: str, shared: object) -> _AioLink:
    from websockets.asyncio.client import connect, unix_connect

    opts: dict[str, Any] = {"compression": None, "max_size": _MAX}
    if task.contender.options.get("unix"):
        return _AioLink(await unix_connect(address, **opts))
    return _AioLink(await connect(address, **opts))


def _contender(scheme: str, api: str) -> Contender:
    aio = api == "asyncio"
    return Contender(
        id=f"raw/{scheme}" + ("/asyncio" if aio else ""),
        title=f"websockets library, {scheme}" + (", asyncio" if aio else ""),
        group="baseline",
        mechanism=scheme,
        api="asyncio" if aio else "blocking",
        side_a=aio_side_a if aio else side_a,
        side_b=aio_side_b if aio else side_b,
        framing="WebSocket frame",
        overhead=6,
        requires=("websockets",),
        options={"unix": scheme == "ws+unix"},
        note="the websockets library used directly (sync or asyncio API), no compression",
    )


CONTENDERS = tuple(
    _contender(scheme, api) for scheme in ("ws", "ws+unix") for api in ("blocking", "asyncio")
)
for _c in CONTENDERS:
    register_contender(_c)

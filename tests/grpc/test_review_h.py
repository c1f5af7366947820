"""Review of gRPC errors, deadlines, closing and the two drivers side by side (helper-39):
TLS failures at connect, polling with timeout=0, what a closed listener leaves behind."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from tests._codecs import FailsOnBad
from tests._threads import BOUND, finished, in_thread

import ipcwire
from ipcwire import aio
from ipcwire.channel import Channel, Listener
from ipcwire.errors import (
    AuthenticationFailed,
    ChannelBroken,
    ChannelClosed,
    IpcwireError,
    RemoteProtocolError,
)


def _blocking_error(url: str, **kw: Any) -> IpcwireError:
    with pytest.raises(IpcwireError) as info:
        if kw.pop("unary", False):
            with ipcwire.connect(url, unary=True, **kw) as ch:
                ch.request(b"x", timeout=10)
        else:
            ipcwire.connect(url, **{"timeout": 10, **kw}).close()
    return info.value


def _asyncio_error(url: str, **kw: Any) -> IpcwireError:
    async def main() -> None:
        if kw.pop("unary", False):
            async with await aio.connect(url, unary=True, **kw) as ch:
                await ch.request(b"x", timeout=10)
        else:
            await (await aio.connect(url, **{"timeout": 10, **kw})).aclose()

    with pytest.raises(IpcwireError) as info:
        asyncio.run(main())
    return info.value


@pytest.mark.parametrize("unary", [False, True])
def test_tls_failures_at_connect_are_not_connection_refused(
    tls_files: tuple[Path, Path], unary: bool
) -> None:
    """A certificate that does not name the host, and a server that requires a client
    certificate we do not have, were ConnectionRefused ("nothing is listening at ...") on both
    drivers, and a plaintext client of a TLS server too: grpcio says "failed to connect to all
    addresses" for every connect failure. docs/errors.md: a misnamed certificate is
    AuthenticationFailed; the table of docs/mechanisms/grpc.md: UNAVAILABLE otherwise is
    ChannelBroken."""
    cert, key = tls_files
    with (
        ipcwire.listen("grpcs://127.0.0.1:0", certfile=cert, keyfile=key) as tls,
        ipcwire.listen("grpcs://127.0.0.1:0", certfile=cert, keyfile=key, client_ca=cert) as mtls,
    ):
        cases: list[tuple[str, dict[str, Any], type[IpcwireError], str]] = [
            (tls.url, {"cafile": cert, "server_hostname": "elsewhere"}, AuthenticationFailed,
             "server_hostname="),
            (mtls.url, {"cafile": cert}, AuthenticationFailed, "certfile="),
            (tls.url.replace("grpcs:", "grpc:"), {}, ChannelBroken, "grpcs://"),
        ]  # fmt: skip
        for url, kw, kind, hint in cases:
            for get in (_blocking_error, _asyncio_error):
                err = get(url, unary=unary, **kw)
                assert type(err) is kind, (get.__name__, url, err)
                assert err.endpoint == url and hint in str(err)
        # and the right certificates still work
        with ipcwire.connect(tls.url, cafile=cert, timeout=10) as ch:
            assert ch.statistics().messages_sent == 0


def test_a_poll_gets_the_rest_of_a_batch_already_received() -> None:
    """send_many's messages travel in one batch. A recv() without a timeout delivers the
    first; the others are then received, and recv(timeout=0) ("a message already received,
    without waiting") must give them. The asyncio channel said Timeout for as long as the
    caller did not yield to the reader task it had just started; the blocking one raced its
    reader thread."""
    with (
        ipcwire.listen("grpc://127.0.0.1:0") as lis,
        ipcwire.connect(lis.url) as c,
        lis.accept(timeout=10) as s,
    ):
        c.send_many([b"a", b"b", b"c", b"d"])
        assert s.recv() == b"a"
        assert s.recv(timeout=0) == b"b"
        assert s.recv_many(timeout=0) == [b"c", b"d"]

    async def main() -> None:
        async with (
            await aio.listen("grpc://127.0.0.1:0") as lis,
            await aio.connect(lis.url) as c,
        ):
            await c.send(b"0")
            async with await lis.accept(timeout=10) as s:
                assert await s.recv() == b"0"
                await c.send_many([b"a", b"b", b"c", b"d"])
                assert await s.recv() == b"a"
                assert await s.recv(timeout=0) == b"b"
                assert await s.recv_many(timeout=0) == [b"c", b"d"]

    asyncio.run(main())


def test_a_closed_listener_leaves_no_pool_thread() -> None:
    """grpcio's server.stop() does not shut down the thread pool it was given, so each
    stream's pool thread stayed, idle, for as long as the closed listener object lived (the
    name bound by ``with ipcwire.listen(...) as lis`` keeps it: one thread per stream the
    listener ever served at once, up to max_channels)."""
    before = set(threading.enumerate())
    with ipcwire.listen("grpc://127.0.0.1:0") as lis:
        clients = [ipcwire.connect(lis.url) for _ in range(3)]
        servers = [lis.accept(timeout=10) for _ in clients]
        for c, s in zip(clients, servers, strict=True):
            c.send(b"hi")
            assert s.recv(timeout=10) == b"hi"
        with ipcwire.connect(lis.url, unary=True) as u:
            t = threading.Thread(target=lambda: lis.accept(timeout=10).send(b"ok"))
            t.start()
            assert u.request(b"call", timeout=10) == b"ok"
            t.join()
    pool = [
        t for t in threading.enumerate() if t not in before and t.name.startswith("ipcwire-grpc")
    ]
    for t in pool:
        t.join(10)  # a guard: close() already waited for them
    assert not [t.name for t in pool if t.is_alive()]
    assert lis.closed  # the listener object is still alive
    for ch in clients + servers:
        ch.close()


@pytest.mark.parametrize("server_does", ["ends at once", "sends its own headers"])
def test_a_grpc_server_that_is_not_ipcwire(server_does: str) -> None:
    """A plain gRPC server that has a /ipcwire.Channel/Stream method (a catch-all handler, a
    proxy) and answers it in its own way. The asyncio client said Timeout ('did not answer
    within the connect timeout', after all of it) to one that sends headers, where the
    blocking one said RemoteProtocolError, also after the whole connect timeout; and to one
    that ends the call at once, RemoteProtocolError without its endpoint. Now both say
    RemoteProtocolError naming it, without waiting: headers without ipcwire's limit in them
    are the answer."""

    def stream(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        if server_does == "sends its own headers":
            context.send_initial_metadata((("server", "other"),))
            yield from requests

    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "ipcwire.Channel", {"Stream": grpc.stream_stream_rpc_method_handler(stream)}
            ),
        )
    )
    url = f"grpc://127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    try:
        for get in (_blocking_error, _asyncio_error):
            err = get(url, timeout=5)
            assert type(err) is RemoteProtocolError, (get.__name__, err)
            assert err.endpoint == url and "not an ipcwire gRPC endpoint" in str(err)
    finally:
        server.stop(None)


def _echo(ch: Channel) -> None:
    for msg in ch:
        ch.send(msg)


async def _aecho(ch: aio.AioChannel) -> None:
    async for msg in ch:
        await ch.send(msg)


def _plain_calls(url: str) -> list[Any]:
    """A plain grpcio client's unary calls to a JSON endpoint: garbage, then a good one."""
    out: list[Any] = []
    with grpc.insecure_channel(url.removeprefix("grpc://")) as gch:
        call = gch.unary_unary("/ipcwire.Channel/Call")
        try:
            out.append(call(b"\xff not json", timeout=10))
        except grpc.RpcError as exc:
            out.append(exc.code())
        out.append(call(b"[1]", timeout=10))
    return out


def test_a_unary_request_that_does_not_decode_is_refused() -> None:
    """The server application's recv() raises RemoteProtocolError for a request that does
    not decode, and the usual loop ends without a reply; the caller was answered OK with an
    empty message and ipcwire-no-reply, which a plain gRPC client takes for success and an
    ipcwire client reported as EndOfChannel ('handled the call but sent no reply'). Now it is
    INVALID_ARGUMENT, which ipcwire's client raises as RemoteProtocolError naming the server
    (docs/mechanisms/grpc.md's table), on both drivers; the server goes on serving."""
    codec = FailsOnBad()
    with (
        ipcwire.listen("grpc://127.0.0.1:0", codec=codec) as lis,
        ipcwire.listen("grpc://127.0.0.1:0", codec="json") as plain,
    ):
        for server in (lis, plain):
            threading.Thread(target=server.serve, args=(_echo,), daemon=True).start()
        with ipcwire.connect(lis.url, codec=codec, unary=True) as u:
            with pytest.raises(RemoteProtocolError, match="does not decode") as info:
                u.request(b"bad", timeout=10)
            assert info.value.endpoint == lis.url
            assert u.request(b"good", timeout=10) == b"good"
        assert _plain_calls(plain.url) == [grpc.StatusCode.INVALID_ARGUMENT, b"[1]"]

    async def main() -> None:
        async with (
            await aio.listen("grpc://127.0.0.1:0", codec=codec) as lis,
            await aio.listen("grpc://127.0.0.1:0", codec="json") as plain,
        ):
            serving = [asyncio.ensure_future(s.serve(_aecho)) for s in (lis, plain)]
            async with await aio.connect(lis.url, codec=codec, unary=True) as u:
                with pytest.raises(RemoteProtocolError, match="does not decode") as info:
                    await u.request(b"bad", timeout=10)
                assert info.value.endpoint == lis.url
                assert await u.request(b"good", timeout=10) == b"good"
            got = await asyncio.to_thread(_plain_calls, plain.url)
            assert got == [grpc.StatusCode.INVALID_ARGUMENT, b"[1]"]
            for s in (lis, plain):
                s.close()
            await asyncio.wait_for(asyncio.gather(*serving), 10)

    asyncio.run(main())


@pytest.mark.parametrize("side", ["client", "server"])
@pytest.mark.parametrize("driver", ["blocking", "asyncio"])
def test_close_wakes_a_task_blocked_in_recv_with_channel_closed(driver: str, side: str) -> None:
    """close() from another task wakes one blocked in recv() with ChannelClosed, as the
    blocking driver does from another thread. On the asyncio client the blocked recv() raised
    asyncio.CancelledError, in a task nobody cancelled: close() cancels the gRPC call a task
    is still reading (after a second), and grpc.aio's read raises CancelledError then."""

    def blocking() -> None:
        with ipcwire.listen("grpc://127.0.0.1:0") as lis:
            c = ipcwire.connect(lis.url)
            s = lis.accept(timeout=10)
            me = c if side == "client" else s
            t, box = in_thread(me.recv)
            assert not finished(t, 0.2)  # it waits for a message
            me.close()
            assert finished(t)
            assert isinstance(box[0], ChannelClosed), box
            c.close()
            s.close()

    async def main() -> None:
        async with await aio.listen("grpc://127.0.0.1:0") as lis:
            c = await aio.connect(lis.url)
            await c.send(b"hello")
            s = await lis.accept(timeout=10)
            assert await s.recv() == b"hello"
            me = c if side == "client" else s
            receiving = asyncio.ensure_future(me.recv())
            done, _ = await asyncio.wait([receiving], timeout=0.2)
            assert not done  # it waits for a message
            closing = asyncio.ensure_future(me.aclose())
            await asyncio.wait([receiving], timeout=BOUND)
            assert receiving.done() and not receiving.cancelled(), "CancelledError"
            assert isinstance(receiving.exception(), ChannelClosed)
            await closing
            await c.aclose()
            await s.aclose()

    if driver == "blocking":
        blocking()
    else:
        asyncio.run(main())


def test_closing_a_unary_channel_with_a_call_in_flight() -> None:
    """close() of a unary=True channel while a task waits for a call's reply: ChannelClosed
    for that task, as the blocking driver gives the waiting thread. grpc.aio raises
    CancelledError in a call cancelled by its channel's close, and request() passed it on."""
    with ipcwire.listen("grpc://127.0.0.1:0") as lis:
        u = ipcwire.connect(lis.url, unary=True)
        t, box = in_thread(lambda: u.request(b"call", timeout=BOUND))
        with lis.accept(timeout=10) as call:  # the call has arrived; no reply yet
            u.close()
            assert finished(t)
            assert isinstance(box[0], ChannelClosed), box
            assert call.recv(timeout=10) == b"call"

    async def main() -> None:
        async with await aio.listen("grpc://127.0.0.1:0") as lis:
            for how in ("close", "aclose"):
                u = await aio.connect(lis.url, unary=True)
                requesting = asyncio.ensure_future(u.request(b"call", timeout=BOUND))
                async with await lis.accept(timeout=10) as call:
                    if how == "close":
                        u.close()
                    else:
                        await u.aclose()
                    await asyncio.wait([requesting], timeout=BOUND)
                    assert requesting.done() and not requesting.cancelled(), how
                    assert isinstance(requesting.exception(), ChannelClosed)
                    assert await call.recv(timeout=10) == b"call"

    asyncio.run(main())


def test_a_unary_client_with_a_token_checks_the_servers_proof() -> None:
    """A client with a token refuses a server that cannot prove it has the token too
    (docs/errors.md: "a client with a token meets a server without one"). The stream client
    checked ipcwire-proof; the unary=True client never did, and took the replies of a server
    without the token (an impostor, or one started without token=) as answers. Now the
    server sends its proof in the trailing metadata of each call, both drivers."""
    with (
        ipcwire.listen("grpc://127.0.0.1:0") as open_server,
        ipcwire.listen("grpc://127.0.0.1:0", token="s3cret") as guarded,
    ):
        for server in (open_server, guarded):
            threading.Thread(target=server.serve, args=(_echo,), daemon=True).start()
        with ipcwire.connect(open_server.url, token="s3cret", unary=True) as u:
            with pytest.raises(AuthenticationFailed, match="did not prove") as info:
                u.request(b"x", timeout=10)
            assert info.value.endpoint == open_server.url
        with ipcwire.connect(guarded.url, token="s3cret", unary=True) as u:
            assert u.request(b"y", timeout=10) == b"y"

        async def main() -> None:
            async with await aio.connect(open_server.url, token="s3cret", unary=True) as u:
                with pytest.raises(AuthenticationFailed, match="did not prove") as info:
                    await u.request(b"x", timeout=10)
                assert info.value.endpoint == open_server.url
            async with await aio.connect(guarded.url, token="s3cret", unary=True) as u:
                assert await u.request(b"y", timeout=10) == b"y"

        asyncio.run(main())


def test_reconnect_outlasts_the_connect_timeout(sock_dir: Path) -> None:
    """reconnect= keeps retrying a refused connect for that long; timeout= is for each
    attempt to be answered (as unix:// and tcp:// do). Every attempt had the first one's
    deadline, so once timeout= had passed since the first, the next attempt said Timeout
    ('did not answer within the connect timeout') at once, and reconnect=30 with the default
    timeout gave up after 10 s. Here the server comes up after the client's timeout=."""
    url = f"grpc+unix://{sock_dir}/late.sock"
    late: list[Listener] = []
    starter = threading.Timer(0.8, lambda: late.append(ipcwire.listen(url)))
    starter.start()
    try:
        with ipcwire.connect(url, timeout=0.5, reconnect=BOUND) as ch:
            assert not ch.closed
    finally:
        starter.join()
        late[0].close()

    async def main() -> None:
        async def start() -> aio.AioListener:
            await asyncio.sleep(0.8)
            return await aio.listen(url)

        starting = asyncio.ensure_future(start())
        try:
            async with await aio.connect(url, timeout=0.5, reconnect=BOUND) as ch:
                assert not ch.closed
        finally:
            await (await starting).aclose()

    asyncio.run(main())


NOBODY_CLIENT = """
import asyncio, os, sys, grpc, grpc.aio, ipcwire
from ipcwire import aio
import ipcwire.grpc.aio, ipcwire.grpc.blocking
ipcwire.mechanisms()
os.setgroups([]); os.setgid(65534); os.setuid(65534)
url = sys.argv[1]

def kind(fn):
    try:
        fn()
        return "connected"
    except ipcwire.IpcwireError as exc:
        return type(exc).__name__

async def stream():
    await (await aio.connect(url, timeout=10)).aclose()

print(kind(lambda: ipcwire.connect(url, timeout=10).close()),
      kind(lambda: ipcwire.connect(url, unary=True).request(b"x", timeout=10)),
      kind(lambda: asyncio.run(stream())), flush=True)
"""


def test_a_socket_file_we_may_not_open_is_permission_denied(sock_dir: Path) -> None:
    """grpc+unix: a socket of mode 0600 (the default) owned by another user was
    ConnectionRefused ('nothing is listening at ...'), though a server is there; docs/errors.md
    says EACCES is PermissionDenied, with the fix (the owner, or mode=0o660 and a shared
    group), as unix:// does. (The client runs as uid 65534, nobody.)"""
    sock_dir.chmod(0o711)  # others may pass, but not open the socket
    with ipcwire.listen(f"grpc+unix://{sock_dir}/g.sock") as lis:
        out = subprocess.run(
            [sys.executable, "-c", NOBODY_CLIENT, lis.url],
            check=False, capture_output=True, text=True, timeout=BOUND,
        )  # fmt: skip
        assert out.stdout.split() == ["PermissionDenied"] * 3, out.stderr[-2000:]


AFTER_THE_LOOP = """
import asyncio, gc, os, sys
from ipcwire import aio
path = sys.argv[1]

async def main():
    return await aio.listen("grpc+unix://" + path)

# A loop closed by hand (asyncio.run() would close the listener itself, at its end)
loop = asyncio.new_event_loop()
lis = loop.run_until_complete(main())
loop.close()
assert os.path.exists(path)
lis.close()
assert lis.closed and not os.path.exists(path)
del lis, loop
gc.collect()
lis = asyncio.run(main())
assert lis.closed and not os.path.exists(path)
lis.close()
del lis
gc.collect()
print("ok", flush=True)
"""


def test_an_asyncio_listener_closed_after_its_loop_removes_its_socket(sock_dir: Path) -> None:
    """close() of an asyncio grpc+unix listener after asyncio.run() returned (a finally,
    atexit) raised RuntimeError ('no running event loop') and left the socket file behind;
    the unix:// listener removes it. The server went with the loop: the file is what is left.
    (A listener that outlives asyncio.run() is closed by it, at its end: the file is gone.)
    (In a child process: grpc.aio's Server.__del__ hangs when its loop is gone, so close()
    keeps the dead server; the child collects garbage to show that it does.)"""
    out = subprocess.run(
        [sys.executable, "-c", AFTER_THE_LOOP, str(sock_dir / "after.sock")],
        check=False, capture_output=True, text=True, timeout=BOUND,
    )  # fmt: skip
    assert out.returncode == 0 and out.stdout.split() == ["ok"], out.stderr[-2000:]


DYING_SERVER = """
import sys, time, ipcwire
kw = {"certfile": sys.argv[2], "keyfile": sys.argv[3]} if len(sys.argv) > 2 else {}
with ipcwire.listen(sys.argv[1], **kw) as lis:
    print(lis.url, flush=True)
    with lis.accept(timeout=30) as ch:
        ch.recv(timeout=30)
        print("got it", flush=True)
        time.sleep(60)  # killed before it answers
"""


@pytest.mark.parametrize("tls", [False, True])
def test_a_server_killed_during_the_first_unary_call(
    tls_files: tuple[Path, Path], tls: bool
) -> None:
    """A server killed (SIGKILL) while it holds a unary client's first call: ChannelBroken,
    not AuthenticationFailed (TLS) nor 'is it a TLS endpoint?' (39b8fd8 read grpcio's
    'Stream removed (Socket closed)' of a lost call as a connection refused in the TLS
    handshake). Both drivers."""
    cert, key = tls_files
    scheme = "grpcs" if tls else "grpc"
    extra = [str(cert), str(key)] if tls else []
    kw: dict[str, Any] = {"cafile": cert} if tls else {}

    def dying() -> tuple[subprocess.Popen[str], str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", DYING_SERVER, f"{scheme}://127.0.0.1:0", *extra],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        return proc, proc.stdout.readline().strip()

    def kill_when_called(proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "got it"
        proc.kill()
        proc.wait()
        proc.stdout.close()

    proc, url = dying()
    with ipcwire.connect(url, unary=True, **kw) as u:
        t, box = in_thread(lambda: u.request(b"x", timeout=BOUND))
        kill_when_called(proc)
        assert finished(t)
    assert type(box[0]) is ChannelBroken and "TLS" not in str(box[0]), box

    async def main() -> None:
        proc, url = dying()
        async with await aio.connect(url, unary=True, **kw) as u:
            requesting = asyncio.ensure_future(u.request(b"x", timeout=BOUND))
            await asyncio.to_thread(kill_when_called, proc)
            with pytest.raises(IpcwireError) as info:
                await requesting
        assert type(info.value) is ChannelBroken and "TLS" not in str(info.value)

    asyncio.run(main())


def test_a_client_over_max_channels_is_told_what_the_limit_is() -> None:
    """gRPC's own words ("Concurrent RPC limit exceeded!") did not say which limit, nor what
    to do; the message now names max_channels= and the fix."""
    with ipcwire.listen("grpc://127.0.0.1:0", max_channels=1) as lst:
        first = ipcwire.connect(lst.url, timeout=10)
        try:
            with pytest.raises(ipcwire.ResourceExhausted, match="max_channels=") as info:
                ipcwire.connect(lst.url, timeout=10).close()
            assert lst.url in str(info.value)
        finally:
            first.close()

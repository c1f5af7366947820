"""TCP done right: loopback by default, named port owners, reconnect, TLS, TCP_NODELAY."""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests._loops import AioRun
from tests._proc import child, kill9, wait_line

import ipcwire
from ipcwire import aio
from ipcwire._stream.blocking import StreamChannel
from ipcwire.errors import (
    AddressInUse,
    AuthenticationFailed,
    ChannelBroken,
    ConnectionRefused,
    IpcwireError,
    Timeout,
)


def _held_port() -> socket.socket:
    """A socket bound to a free port, not listening: a connection to the port is refused, and
    no other process (the other pytest worker's) can take the port while it stays open."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s


def _echo_server(listener: ipcwire.Listener) -> threading.Thread:
    def echo(ch: ipcwire.Channel) -> None:
        for msg in ch:
            ch.send(msg)

    t = threading.Thread(target=listener.serve, args=(echo,), daemon=True)
    t.start()
    return t


def test_binds_loopback_unless_told_otherwise() -> None:
    with ipcwire.listen("tcp://:0") as lst:
        assert lst.url.startswith("tcp://127.0.0.1:")
    with ipcwire.listen("tcp://0.0.0.0:0") as lst:
        assert lst.url.startswith("tcp://0.0.0.0:")


def test_port_in_use_names_the_owner() -> None:
    code = """
    import socket, sys
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
    print(s.getsockname()[1], flush=True)
    sys.stdin.read()
    """
    with child(code) as proc:
        port = int(wait_line(proc))
        with pytest.raises(AddressInUse) as info:
            ipcwire.listen(f"tcp://127.0.0.1:{port}")
        assert info.value.pid == proc.pid
        assert f"pid {proc.pid}" in str(info.value)


def test_restart_on_the_same_port_after_a_crash() -> None:
    code = """
    import ipcwire, sys
    lst = ipcwire.listen("tcp://127.0.0.1:0")
    print(lst.url.rpartition(":")[2], flush=True)
    ch = lst.accept()
    ch.send(b"hi")
    print("talking", flush=True)
    sys.stdin.read()
    """
    with child(code) as proc:
        port = int(wait_line(proc))
        ch = ipcwire.connect(f"tcp://127.0.0.1:{port}")
        assert wait_line(proc) == "talking"
        kill9(proc)  # connections die in the kernel's hands; the port has TIME_WAIT residue
        ch.close()
    with ipcwire.listen(f"tcp://127.0.0.1:{port}"):
        pass  # SO_REUSEADDR: no EADDRINUSE after a crash


def test_refused_is_clear_and_reconnect_retries_until_the_server_is_up() -> None:
    held = _held_port()
    url = f"tcp://127.0.0.1:{held.getsockname()[1]}"
    with pytest.raises(ConnectionRefused, match="reconnect="):
        ipcwire.connect(url)
    result: list[object] = []

    def client() -> None:
        try:
            with ipcwire.connect(url, reconnect=20) as ch:
                result.append(ch.request(b"x", timeout=10))
        except Exception as exc:
            result.append(exc)

    t = threading.Thread(target=client)
    t.start()
    held.close()  # (the port is free for the listener, a moment before it binds)
    with ipcwire.listen(url) as lst:
        srv = _echo_server(lst)
        t.join(30)
        lst.close()
        srv.join(10)
    assert result == [b"x"]


def test_nodelay_on_both_ends() -> None:
    with ipcwire.listen("tcp://127.0.0.1:0") as lst:
        box: list[ipcwire.Channel] = []
        t = threading.Thread(target=lambda: box.append(lst.accept(timeout=10)))
        t.start()
        with ipcwire.connect(lst.url) as ch:
            t.join()
            for c in (ch, box[0]):
                sock = socket.socket(fileno=c.fileno())  # type: ignore[attr-defined]
                try:
                    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
                finally:
                    sock.detach()
            box[0].close()


@pytest.fixture(scope="module")
def tls(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ssl.SSLContext, ssl.SSLContext]]:
    d: Path = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(d / "key.pem"),
            "-out",
            str(d / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(d / "cert.pem", d / "key.pem")
    client = ssl.create_default_context(cafile=str(d / "cert.pem"))
    yield server, client


def test_tls_round_trip_and_a_plain_client_is_dropped(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, client_ctx = tls
    with ipcwire.listen("tcp://127.0.0.1:0", ssl=server_ctx, codec="json") as lst:
        srv = _echo_server(lst)
        with pytest.raises(IpcwireError):
            ipcwire.connect(lst.url, codec="json", timeout=3)  # no TLS: refused, server unharmed
        with ipcwire.connect(lst.url, ssl=client_ctx, codec="json") as ch:
            assert ch.request({"secure": True}, timeout=10) == {"secure": True}
            big = {"blob": "x" * 300_000}
            assert ch.request(big, timeout=10) == big
        lst.close()
        srv.join(10)


def test_tls_asyncio(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_ctx, client_ctx = tls

    async def main() -> None:
        async with await aio.listen("tcp://127.0.0.1:0", ssl=server_ctx) as lst:

            async def echo(ch: aio.AioChannel) -> None:
                async for msg in ch:
                    await ch.send(msg)

            srv = asyncio.ensure_future(lst.serve(echo))
            async with await aio.connect(lst.url, ssl=client_ctx) as ch:
                assert await ch.request(b"tls", timeout=10) == b"tls"
            lst.close()
            await asyncio.wait_for(srv, 10)

    asyncio.run(main())


def test_a_tls_send_that_times_out_part_way_breaks_the_channel_for_sending(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """A TLS send that timed out after part of a message had gone said "nothing was sent"
    and left the channel open for sending; the next send then failed with PermissionDenied
    (OpenSSL's "bad length" on a different retry). As over plain TCP: a Timeout that says
    the channel can no longer send, then ChannelBroken."""
    server_ctx, client_ctx = tls
    with ipcwire.listen("tcp://127.0.0.1:0", ssl=server_ctx, codec="bytes") as lst:
        ch = ipcwire.connect(lst.url, ssl=client_ctx, codec="bytes", timeout=5)
        with ch, lst.accept(timeout=5) as srv:
            with pytest.raises(Timeout, match="cannot be used for sending"):
                ch.send(b"x" * (24 << 20), timeout=0.2)  # bigger than every buffer; no reader
            with pytest.raises(ChannelBroken, match="out of step"):
                ch.send(b"next", timeout=5)
            ch.close()
            with pytest.raises(ChannelBroken, match="middle of a message"):
                srv.recv(timeout=5)


def test_an_untrusted_certificate_is_authentication_failed_on_both_drivers(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """A server certificate the client does not trust (or that names another host) was
    ChannelBroken from the blocking connect and PermissionDenied ("permission denied while
    connecting", OpenSSL's error code 1 read as EPERM) from the asyncio one. Both are now
    AuthenticationFailed saying how to fix it, and the listener goes on serving."""
    server_ctx, client_ctx = tls
    untrusted = ssl.create_default_context()  # the system's CAs: not our self-signed one
    cases = [(untrusted, None, "self-signed"), (client_ctx, "example.com", "example.com")]
    with ipcwire.listen("tcp://127.0.0.1:0", ssl=server_ctx) as lst:
        for ctx, host, why in cases:
            with pytest.raises(AuthenticationFailed, match=f"not trusted.*{why}.*cafile="):
                ipcwire.connect(lst.url, ssl=ctx, server_hostname=host, timeout=5)

            async def main(ctx: ssl.SSLContext = ctx, host: str | None = host) -> None:
                await aio.connect(lst.url, ssl=ctx, server_hostname=host, timeout=5)

            with pytest.raises(AuthenticationFailed, match=f"not trusted.*{why}.*cafile="):
                asyncio.run(main())
        ch = ipcwire.connect(lst.url, ssl=client_ctx, timeout=5)
        with ch, lst.accept(timeout=5) as peer:
            ch.send(b"still served")
            assert peer.recv(timeout=5) == b"still served"


def test_asyncio_tls_listener_drops_a_silent_client_after_handshake_timeout(
    tls: tuple[ssl.SSLContext, ssl.SSLContext], aio_run: AioRun
) -> None:
    """A client that connects to an asyncio TLS listener and never starts TLS was kept for
    asyncio's own 60 s TLS handshake timeout; handshake_timeout= (10 s by default) did not
    apply to it. The blocking listener drops it at handshake_timeout; so does asyncio now."""
    server_ctx, _ = tls

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        lst = await aio.listen("tcp://127.0.0.1:0", ssl=server_ctx, handshake_timeout=0.3)
        silent = socket.socket()
        silent.setblocking(False)
        try:
            port = int(lst.url.rsplit(":", 1)[1])
            await loop.sock_connect(silent, ("127.0.0.1", port))
            async with asyncio.timeout(10):  # a guard: the fix drops it after 0.3 s
                return await loop.sock_recv(silent, 100)
        finally:
            silent.close()
            lst.close()

    assert aio_run(main()) == b""


def test_every_connect_and_listen_error_names_its_endpoint(aio_run: AioRun) -> None:
    """Errors carry the URL in ``.endpoint`` (what tools such as doctor read), not only in
    the text: a URL without a port or host, an address not of this machine, and the asyncio
    connect that gave up after reconnect= did not set it."""
    cases: list[tuple[str, Callable[[str], object]]] = [
        ("tcp://127.0.0.1", lambda u: ipcwire.connect(u, timeout=1)),
        ("tcp://:7000", lambda u: ipcwire.connect(u, timeout=1)),
        ("tcp://192.0.2.1:0", ipcwire.listen),  # TEST-NET-1: never an address of ours
    ]
    for url, call in cases:
        with pytest.raises(IpcwireError) as info:
            call(url)
        assert info.value.endpoint == url, info.value
    held = _held_port()
    refused = f"tcp://127.0.0.1:{held.getsockname()[1]}"

    async def main() -> None:
        await aio.connect(refused, timeout=1, reconnect=0.05)

    with held, pytest.raises(ConnectionRefused) as refusal:
        aio_run(main())
    assert refusal.value.endpoint == refused


def test_tls_channels_work_with_descriptor_numbers_over_1023(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """A server with a thousand clients hands out fd numbers over 1023, which select()
    refuses (ValueError): a TLS channel's recv(timeout=0) and send(timeout=) waited with it."""
    server_ctx, client_ctx = tls
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 4096), hard), hard))
    held = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
    try:
        with ipcwire.listen("tcp://127.0.0.1:0", ssl=server_ctx) as lst:
            box: list[ipcwire.Channel] = []
            t = threading.Thread(target=lambda: box.append(lst.accept(timeout=10)))
            t.start()
            with ipcwire.connect(lst.url, ssl=client_ctx, timeout=10) as ch:
                t.join()
                with box[0] as served:
                    assert isinstance(ch, StreamChannel) and ch.fileno() > 1023
                    with pytest.raises(Timeout):
                        ch.recv(timeout=0)
                    ch.send(b"high", timeout=5)
                    assert served.recv(timeout=5) == b"high"
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

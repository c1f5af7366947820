"""Bad input and bad peers: typed errors, nothing partial, the server keeps serving others."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
from collections.abc import Callable

import pytest
from tests._codecs import FailsOnBad
from tests._proc import run_python

import ipcwire
from ipcwire import aio
from ipcwire.errors import (
    ChannelBroken,
    ChannelClosed,
    FrameTooLarge,
    RemoteProtocolError,
    ResourceExhausted,
    Timeout,
)

URLS = ["unix_url", "tcp_url"]


def _raw_connect(url: str) -> socket.socket:
    ep = ipcwire._core.url.parse_url(url)  # type: ignore[attr-defined]
    if ep.scheme == "unix":
        s = socket.socket(socket.AF_UNIX)
        s.connect(ep.path)
    else:
        s = socket.create_connection((ep.host, ep.port))
    s.settimeout(10)
    return s


def _raw_handshake(url: str, codec: str = "bytes") -> socket.socket:
    """Speak the handshake of docs/protocol.md by hand, as another language would."""
    s = _raw_connect(url)
    hello = json.dumps({"ipcwire": 1, "codec": codec, "framing": "length", "max_frame": 1 << 20})
    s.sendall(struct.pack(">I", len(hello)) + hello.encode())
    (n,) = struct.unpack(">I", s.recv(4, socket.MSG_WAITALL))
    welcome = json.loads(s.recv(n, socket.MSG_WAITALL))
    assert welcome["ipcwire"] == 1
    return s


@pytest.mark.parametrize("fixture", URLS)
def test_misbehaving_clients_never_disturb_a_good_one(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    url: Callable[[], str] = request.getfixturevalue(fixture)
    with ipcwire.listen(url(), token="right", handshake_timeout=2.0) as lst:
        srv = threading.Thread(target=lst.serve, args=(lambda ch: ch.send(ch.recv()),))
        srv.start()
        bad = [_raw_connect(lst.url) for _ in range(6)]
        bad[0].sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # garbage (a 1.2 GB "length")
        bad[1].sendall(struct.pack(">I", 1 << 30))  # an oversized handshake frame
        bad[2].sendall(struct.pack(">I", 100) + b"{half")  # half a frame, then silence
        hello = b'{"ipcwire": "\xb2"}'  # JSON, with a string that is not UTF-8
        bad[5].sendall(struct.pack(">I", len(hello)) + hello)
        # bad[3]: connects and says nothing at all; bad[4]: the wrong token
        with pytest.raises(ipcwire.AuthenticationFailed):
            ipcwire.connect(lst.url, token="wrong", timeout=5)
        start = time.monotonic()
        with ipcwire.connect(lst.url, token="right", timeout=5) as ch:
            assert ch.request(b"served", timeout=5) == b"served"
        # Served long before the silent clients' handshake deadline (2 s) dropped them.
        assert time.monotonic() - start < 2.0
        for s in bad:
            s.settimeout(10)
            try:
                assert s.recv(1024) is not None  # each is closed by the server eventually
            except OSError:
                pass
            s.close()
        lst.close()
        srv.join(10)


@pytest.mark.parametrize("fixture", URLS)
def test_oversized_frame_is_refused_named_and_skipped(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    url: Callable[[], str] = request.getfixturevalue(fixture)
    with ipcwire.listen(url(), max_frame=1000) as lst:
        box: list[ipcwire.Channel] = []
        t = threading.Thread(target=lambda: box.append(lst.accept(timeout=10)))
        t.start()
        raw = _raw_handshake(lst.url)
        t.join()
        with box[0] as ch:
            raw.sendall(struct.pack(">I", 5000) + b"x" * 5000 + struct.pack(">I", 2) + b"ok")
            with pytest.raises(FrameTooLarge) as info:
                ch.recv(timeout=10)
            assert (info.value.size, info.value.limit) == (5000, 1000)
            assert lst.url in str(info.value)
            assert ch.recv(timeout=10) == b"ok"  # the stream stayed in step
        raw.close()


@pytest.mark.parametrize("fixture", URLS)
def test_peer_dying_mid_message_gives_broken_not_a_partial_message(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    url: Callable[[], str] = request.getfixturevalue(fixture)
    with ipcwire.listen(url()) as lst:
        box: list[ipcwire.Channel] = []
        t = threading.Thread(target=lambda: box.append(lst.accept(timeout=10)))
        t.start()
        code = f"""
        import os, socket, struct, json
        from urllib.parse import urlsplit
        u = {lst.url!r}
        if u.startswith("unix"):
            s = socket.socket(socket.AF_UNIX); s.connect(urlsplit(u).path)
        else:
            p = urlsplit(u); s = socket.create_connection((p.hostname, p.port))
        h = json.dumps({{"ipcwire": 1, "codec": "bytes", "framing": "length", "max_frame": 99}})
        s.sendall(struct.pack(">I", len(h)) + h.encode())
        n = struct.unpack(">I", s.recv(4, socket.MSG_WAITALL))[0]; s.recv(n, socket.MSG_WAITALL)
        s.sendall(struct.pack(">I", 5) + b"whole" + struct.pack(">I", 100) + b"half")
        os.kill(os.getpid(), 9)
        """
        with pytest.raises(AssertionError, match=r"child failed \(-9\)"):
            run_python(code)  # the child really died by SIGKILL, mid-message
        t.join()
        with box[0] as ch:
            assert ch.recv(timeout=10) == b"whole"
            with pytest.raises(ChannelBroken, match="middle of a message"):
                ch.recv(timeout=10)


def test_sigpipe_never_kills_the_process(unix_url: Callable[[], str]) -> None:
    url = unix_url()
    with ipcwire.listen(url) as lst:
        code = f"""
        import signal, ipcwire
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # as in a C host or after a bad library
        ch = ipcwire.connect({url!r})
        print("connected", flush=True)
        import sys; sys.stdin.readline()
        try:
            for _ in range(1000):
                ch.send(b"x" * 65536)
        except ipcwire.ChannelBroken as exc:
            print("ChannelBroken", type(exc.__cause__).__name__)
        """
        from tests._proc import python, wait_line

        proc = python(code)
        assert wait_line(proc) == "connected"
        lst.accept(timeout=10).close()
        out, err = proc.communicate("go\n", timeout=30)
        assert proc.returncode == 0, err
        assert out.strip() == "ChannelBroken BrokenPipeError"


@pytest.mark.parametrize("fixture", URLS)
def test_a_slow_reader_slows_the_writer(fixture: str, request: pytest.FixtureRequest) -> None:
    url: Callable[[], str] = request.getfixturevalue(fixture)
    with ipcwire.listen(url()) as lst:
        box: list[ipcwire.Channel] = []
        t = threading.Thread(target=lambda: box.append(lst.accept(timeout=10)))
        t.start()
        with ipcwire.connect(lst.url) as ch:
            t.join()
            sent = 0
            with pytest.raises(Timeout):
                for _ in range(10_000):
                    ch.send(b"y" * 65536, timeout=0.5)  # the reader never reads
                    sent += 1
            assert sent * 65536 < 64 << 20  # bounded by kernel buffers, not by memory
            with pytest.raises(ChannelBroken, match="out of step"):
                ch.send(b"z")  # a send cut off mid-message poisons sending, and says why
            box[0].close()


def test_asyncio_reader_pauses_instead_of_buffering_everything(
    unix_url: Callable[[], str],
) -> None:
    async def main() -> None:
        async with await aio.listen(unix_url()) as lst:
            accepting = asyncio.ensure_future(lst.accept(timeout=10))
            async with await aio.connect(lst.url) as ch:
                server = await accepting
                with pytest.raises(Timeout):
                    for _ in range(10_000):
                        await ch.send(b"y" * 65536, timeout=0.5)
                buffered = server.statistics().buffered_bytes
                assert 0 < buffered < 16 << 20, buffered  # paused at the high-water mark
                got = await server.recv(timeout=10)  # and it resumes when read
                assert got == b"y" * 65536
                await server.aclose()

    asyncio.run(main())


def test_request_timeout_closes_the_channel(unix_url: Callable[[], str]) -> None:
    with ipcwire.listen(unix_url()) as lst:
        box: list[ipcwire.Channel] = []
        t = threading.Thread(target=lambda: box.append(lst.accept(timeout=10)))
        t.start()
        with ipcwire.connect(lst.url) as ch:
            t.join()
            with pytest.raises(Timeout, match="late reply"):
                ch.request(b"never answered", timeout=0.1)
            assert ch.closed
            with pytest.raises(ChannelClosed):
                ch.recv(timeout=0)
            box[0].close()


def test_undecodable_message_is_a_remote_protocol_error_and_the_channel_goes_on(
    unix_url: Callable[[], str],
) -> None:
    with ipcwire.listen(unix_url(), codec="json") as lst:
        box: list[ipcwire.Channel] = []
        t = threading.Thread(target=lambda: box.append(lst.accept(timeout=10)))
        t.start()
        raw = _raw_handshake(lst.url, codec="json")
        t.join()
        with box[0] as ch:
            raw.sendall(struct.pack(">I", 5) + b"{oops" + struct.pack(">I", 4) + b"true")
            with pytest.raises(RemoteProtocolError, match="not valid json") as info:
                ch.recv(timeout=10)
            assert info.value.endpoint == ch.url and ch.url in str(info.value)
            assert ch.recv(timeout=10) is True
        raw.close()


def test_out_of_file_descriptors_is_a_typed_error(unix_url: Callable[[], str]) -> None:
    url = unix_url()
    with ipcwire.listen(url) as lst:
        srv = threading.Thread(target=lst.serve, args=(lambda ch: ch.recv(),))
        srv.start()
        out = run_python(
            f"""
            import resource, ipcwire
            resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))
            chans = []
            try:
                for _ in range(100):
                    chans.append(ipcwire.connect({url!r}, timeout=5))
            except ipcwire.ResourceExhausted as exc:
                print("ResourceExhausted", "ulimit" in str(exc))
            """
        )
        assert out == "ResourceExhausted True"
        lst.close()
        srv.join(10)
    assert ResourceExhausted.__mro__[1] is ipcwire.IpcwireError


def _is_named_decode_error(exc: BaseException) -> bool:
    return (
        isinstance(exc, RemoteProtocolError)
        and exc.endpoint is not None
        and exc.endpoint in str(exc)
        and isinstance(exc.__cause__, ValueError)
    )


@pytest.mark.parametrize("url", ["ws://127.0.0.1:0", "grpc://127.0.0.1:0", "http://127.0.0.1:0"])
def test_a_custom_codecs_error_is_a_remote_protocol_error_on_every_mechanism(url: str) -> None:
    """Mechanisms whose library hands over whole messages (WebSocket, gRPC, the HTTP client)
    called the codec themselves, so a custom codec's ValueError reached recv() as it was
    (errors.md and WireFormat.decode promise RemoteProtocolError with it as __cause__).
    Both directions (an HTTP server answers 400 to a body that does not decode, tested
    elsewhere); the channel goes on."""
    codec = FailsOnBad()
    with ipcwire.listen(url, codec=codec) as lst:
        box: list[ipcwire.Channel] = []
        t = threading.Thread(target=lambda: box.append(lst.accept(timeout=10)))
        t.start()
        with ipcwire.connect(lst.url, codec=codec, timeout=10) as client:
            client.send(b"bad" if not url.startswith("http") else b"first")
            t.join()
            with box[0] as server:
                if url.startswith("http"):
                    assert server.recv(timeout=10) == b"first"
                else:
                    with pytest.raises(RemoteProtocolError) as info:
                        server.recv(timeout=10)
                    assert _is_named_decode_error(info.value), info.value
                client.send(b"next")
                assert server.recv(timeout=10) == b"next"
                server.send(b"bad")
                server.send(b"fine")
                with pytest.raises(RemoteProtocolError) as info:
                    client.recv(timeout=10)
                assert _is_named_decode_error(info.value), info.value
                assert client.recv(timeout=10) == b"fine"

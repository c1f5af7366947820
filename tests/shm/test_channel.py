"""``shm://`` channels through the public API: naming, options, zero copy (numpy too), limits,
credentials, tokens, and peers dying in other processes (blocking and asyncio)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
import stat
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from tests._codecs import FailsOnBad

import ipcwire
from ipcwire import aio
from ipcwire.errors import (
    AuthenticationFailed,
    ChannelBroken,
    ConfigurationError,
    FrameTooLarge,
    InvalidURL,
    LocalProtocolError,
    PermissionDenied,
    RemoteProtocolError,
)
from ipcwire.shm.aio import AioShmChannel
from ipcwire.shm.blocking import ShmChannel

from ._util import process

PROMPT = 2.0


@contextmanager
def pair(url: str, **kw: Any) -> Iterator[tuple[ShmChannel, ShmChannel]]:
    """(client, server) through listen/connect/accept in this process."""
    listen_kw = {k: v for k, v in kw.items() if k not in ("capacity",)}
    with ipcwire.listen(url, **listen_kw) as listener:
        box: list[Any] = []
        t = threading.Thread(target=lambda: box.append(listener.accept(timeout=10)))
        t.start()
        client = ipcwire.connect(listener.url, timeout=10, **kw)
        t.join()
        with client, box[0] as server:
            assert isinstance(client, ShmChannel) and isinstance(server, ShmChannel)
            yield client, server


def test_a_name_lives_in_the_runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    path = runtime / "ipcwire" / "shm.demo-app_1.sock"
    with pair("shm://demo-app_1") as (c, s):
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        c.send(b"hi")
        assert s.recv(timeout=5) == b"hi"
    assert not path.exists()


def test_without_a_runtime_dir_a_private_tmp_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    name = f"t{os.getpid()}"
    with pair(f"shm://{name}") as (c, s):
        path = Path(f"/tmp/ipcwire-{os.getuid()}/shm.{name}.sock")
        assert path.exists()
        s.send(b"back")
        assert c.recv(timeout=5) == b"back"


def test_an_unsafe_socket_directory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    (runtime / "ipcwire").mkdir()
    os.chmod(runtime / "ipcwire", 0o777)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    with pytest.raises(PermissionDenied, match="private directory"):
        ipcwire.listen("shm://app")


@pytest.mark.parametrize("url", ["shm://", "shm://a/b", "shm://-x", "shm://a b", "shm:"])
def test_bad_names(url: str) -> None:
    with pytest.raises(InvalidURL):
        ipcwire.connect(url)


@pytest.mark.parametrize(
    "kw",
    [
        {"capacity": 1000},
        {"capacity": "3M"},
        {"capacity": "lots"},
        {"policy": "nap"},
        {"spin_us": -1},
        {"ring": 1},
    ],
)
def test_bad_options(kw: dict[str, Any], shm_url: Callable[[], str]) -> None:
    with pytest.raises(ConfigurationError):
        ipcwire.connect(shm_url(), **kw)


def test_capacity_and_policy(shm_url: Callable[[], str]) -> None:
    with pair(shm_url() + "?capacity=64K", policy="spin") as (c, s):
        assert c.capacity == s.capacity == (65536, 65536)
        assert c.wait_policy == "spin"
        c.wait_policy = "park"
        assert c.wait_policy == "park"
    with pair(shm_url(), capacity="64K") as (c, s):  # longer than the ring: split, reassembled
        box: list[bytes] = []
        t = threading.Thread(target=lambda: box.append(s.recv(timeout=10)))
        t.start()
        c.send(b"y" * 300_000, timeout=10)
        t.join()
        assert box == [b"y" * 300_000]


def test_zero_copy_loan_and_view(shm_url: Callable[[], str]) -> None:
    with pair(shm_url()) as (c, s):
        buf = c.loan(5)
        buf[:] = b"hello"
        c.send_loan()
        with c.loaned(100) as buf:
            buf[:3] = b"abc"
        view = s.recv_view(timeout=5)
        assert view.readonly and bytes(view) == b"hello"
        view2 = s.recv_view(timeout=5)  # releases the first
        assert len(view2) == 100 and bytes(view2[:3]) == b"abc"
        with pytest.raises(ValueError, match="released"):
            bytes(view)
        s.release_view()
        with pytest.raises(RuntimeError), c.loaned(10):
            raise RuntimeError  # an error inside gives the loan back
        c.send(b"after")
        assert s.recv(timeout=5) == b"after"
        assert c.statistics().messages_sent == 3


def test_numpy_round_trip_without_copies(shm_url: Callable[[], str]) -> None:
    import numpy as np  # installed by the test extra

    a = np.arange(60_000, dtype=np.float64).reshape(300, 200)
    with pair(shm_url(), capacity="4M") as (c, s):
        buf = c.loan(a.nbytes)
        out = np.frombuffer(buf, dtype=a.dtype).reshape(a.shape)  # an array in the ring
        np.multiply(a, 2, out=out)  # computed straight into shared memory
        del out
        c.send_loan()
        view = s.recv_view(timeout=5)
        got = np.frombuffer(view, dtype=np.float64).reshape(300, 200)
        assert (got == a * 2).all()
        assert not got.flags.writeable
        seg = s._link.segment
        assert seg is not None
        anchor = ctypes.c_char.from_buffer(seg.mm)
        start = ctypes.addressof(anchor)
        del anchor
        assert start <= got.ctypes.data < start + seg.size  # read in place: no copy
        del got, view
        s.release_view()


def test_over_the_peers_max_frame_is_refused_before_sending(shm_url: Callable[[], str]) -> None:
    url = shm_url()
    with ipcwire.listen(url, max_frame=1000) as listener:
        box: list[Any] = []
        t = threading.Thread(target=lambda: box.append(listener.accept(timeout=10)))
        t.start()
        with ipcwire.connect(url, timeout=10) as c:
            t.join()
            with box[0] as s:
                with pytest.raises(FrameTooLarge) as info:
                    c.send(b"x" * 1001)
                assert (info.value.size, info.value.limit) == (1001, 1000)
                assert isinstance(c, ShmChannel)
                with pytest.raises(FrameTooLarge):
                    c.loan(1001)
                c.send(b"x" * 1000)
                assert s.recv(timeout=5) == b"x" * 1000


def test_codecs_and_long_messages(shm_url: Callable[[], str]) -> None:
    with pair(shm_url(), codec="msgpack", capacity="64K") as (c, s):
        big = {"data": list(range(200_000))}
        box: list[Any] = []
        t = threading.Thread(target=lambda: box.append(s.recv(timeout=10)))
        t.start()
        c.send(big, timeout=10)
        t.join()
        assert box == [big]
        c.send_many([{"n": i} for i in range(100)])
        got: list[Any] = []
        while len(got) < 100:
            got += s.recv_many(timeout=5)
        assert got == [{"n": i} for i in range(100)]


def test_peer_credentials(shm_url: Callable[[], str]) -> None:
    with pair(shm_url()) as (c, s):
        for ch in (c, s):
            assert ch.peer is not None
            assert (ch.peer.pid, ch.peer.uid) == (os.getpid(), os.getuid())


def test_tokens(shm_url: Callable[[], str]) -> None:
    url = shm_url()
    with pair(url, token="s3cret") as (c, s):
        c.send(b"ok")
        assert s.recv(timeout=5) == b"ok"
    with ipcwire.listen(url, token="s3cret") as listener:
        with pytest.raises(AuthenticationFailed):
            ipcwire.connect(url, timeout=5)
        with pytest.raises(AuthenticationFailed):
            ipcwire.connect(url, token="guess", timeout=5)
        listener.close()


def test_a_silent_client_does_not_delay_others(shm_url: Callable[[], str]) -> None:
    url = shm_url()
    with ipcwire.listen(url) as listener:
        silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        silent.connect(url.removeprefix("shm://"))
        try:
            t0 = time.monotonic()
            with ipcwire.connect(url, timeout=5) as c, listener.accept(timeout=5) as s:
                c.send(b"through")
                assert s.recv(timeout=5) == b"through"
            assert time.monotonic() - t0 < 5
        finally:
            silent.close()


def test_listener_process_killed_breaks_a_blocked_recv(shm_url: Callable[[], str]) -> None:
    url = shm_url()
    with process("listen-hold", url) as p:
        assert p.line() == "listening"
        with ipcwire.connect(url, timeout=10) as c:
            assert p.line() == "ready"
            result: list[Any] = []

            def receive() -> None:
                try:
                    c.recv(timeout=30)
                except ChannelBroken as exc:
                    result.append((exc, time.monotonic()))

            t = threading.Thread(target=receive)
            t.start()
            killed = time.monotonic()
            p.kill()
            t.join(30)
            assert result and result[0][1] - killed < PROMPT


def test_asyncio_peer_killed_breaks_recv(shm_url: Callable[[], str]) -> None:
    url = shm_url()

    async def main() -> None:
        async with await aio.listen(url) as listener:
            with process("connect-hold", url) as p:
                ch = await listener.accept(timeout=10)
                assert isinstance(ch, AioShmChannel)
                assert p.line() == "ready"
                receiving = asyncio.ensure_future(ch.recv(timeout=30))
                await asyncio.sleep(0)  # let it park
                killed = time.monotonic()
                p.kill()
                with pytest.raises(ChannelBroken):
                    await receiving
                assert time.monotonic() - killed < PROMPT
                await ch.aclose()

    asyncio.run(main())


def test_asyncio_zero_copy_and_back_pressure(shm_url: Callable[[], str]) -> None:
    url = shm_url()

    async def main() -> None:
        async with await aio.listen(url) as listener:
            accepting = asyncio.ensure_future(listener.accept(timeout=10))
            c = await aio.connect(url, capacity="16K", timeout=10)
            s = await accepting
            assert isinstance(c, AioShmChannel) and isinstance(s, AioShmChannel)
            buf = await c.loan(4)
            buf[:] = b"zero"
            c.send_loan()
            view = await s.recv_view(timeout=5)
            assert bytes(view) == b"zero"
            s.release_view()
            # more than the ring holds: the sender waits for the receiver, no busy loop
            sender = asyncio.ensure_future(c.send_many([b"m" * 1000] * 100, timeout=10))
            got = 0
            while got < 100:
                got += len(await s.recv_many(timeout=10))
            await sender
            big = os.urandom(100_000)  # split into fragments, sent as room appears
            sending = asyncio.ensure_future(c.send(big, timeout=10))
            assert await s.recv(timeout=10) == big
            await sending
            await c.aclose()
            await s.aclose()

    asyncio.run(main())


def test_a_message_that_does_not_decode_in_a_batch_loses_no_other(
    shm_url: Callable[[], str],
) -> None:
    """recv_many takes every message of the ring at once; one that does not decode used to
    lose the whole batch (those before it and after it). Now the messages before it come
    first, then its error, then the rest: the error comes in its place."""
    with pair(shm_url(), codec=FailsOnBad()) as (c, s):
        c.send_many([b"a", b"bad", b"c", b"d"])
        assert s.recv_many(timeout=5) == [b"a"]
        with pytest.raises(RemoteProtocolError):
            s.recv_many(timeout=5)
        assert s.recv(timeout=5) == b"c"
        assert s.recv_many(timeout=5) == [b"d"]

    async def main() -> None:
        url = shm_url()
        async with await aio.listen(url, codec=FailsOnBad()) as listener:
            accepting = asyncio.ensure_future(listener.accept(timeout=10))
            c = await aio.connect(url, codec=FailsOnBad(), timeout=10)
            s = await accepting
            async with c, s:
                await c.send_many([b"bad", b"b", b"bad", b"d"])
                with pytest.raises(RemoteProtocolError):
                    await s.recv_many(timeout=5)
                assert await s.recv_many(timeout=5) == [b"b"]
                with pytest.raises(RemoteProtocolError):
                    await s.recv(timeout=5)
                assert await s.recv_many(timeout=5) == [b"d"]

    asyncio.run(main())


def test_asyncio_send_cancelled_part_way_through_a_long_message(
    shm_url: Callable[[], str],
) -> None:
    """A send cancelled (asyncio.timeout() around it, say) after the first fragments of a
    long message went into the ring leaves a message that never ends: the channel refuses to
    send anything more, as after a timeout= part-way. It used to send the next message after
    those fragments, counted as sent, and the receiver then called the ring corrupt
    (RemoteProtocolError, "the peer is buggy or hostile") and lost it."""
    url = shm_url()

    async def main() -> None:
        async with await aio.listen(url) as listener:
            accepting = asyncio.ensure_future(listener.accept(timeout=10))
            c = await aio.connect(url, capacity="4K", timeout=10)
            s = await accepting
            assert isinstance(c, AioShmChannel)
            sending = asyncio.ensure_future(c.send(b"L" * 20_000, timeout=10))
            await asyncio.sleep(0)  # it writes the fragments that fit, then waits for room
            assert c.statistics().messages_sent == 0 and not sending.done()
            sending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await sending
            receiving = asyncio.ensure_future(s.recv(timeout=10))
            with pytest.raises(ChannelBroken, match="part-way"):
                await c.send(b"next", timeout=10)
            with pytest.raises(ChannelBroken, match="part-way"):
                await c.loan(4, timeout=10)
            await c.aclose()
            with pytest.raises(ChannelBroken, match="middle of a message"):
                await receiving
            await s.aclose()

    asyncio.run(main())


def test_send_many_refuses_a_bad_batch_before_sending_any_of_it(
    shm_url: Callable[[], str],
) -> None:
    """An item over the peer's max_frame, or one that is not bytes, refuses the whole batch
    with nothing sent, on both drivers (the asyncio one sent the items before it)."""
    bad_batches: list[tuple[list[Any], type[Exception]]] = [
        ([b"a", b"x" * 2000, b"c"], FrameTooLarge),
        ([b"a", "text"], LocalProtocolError),
    ]
    with pair(shm_url(), max_frame=1000) as (c, s):
        for batch, error in bad_batches:
            with pytest.raises(error):
                c.send_many(batch)
        c.send(b"end")
        assert s.recv_many(timeout=5) == [b"end"]

    async def main() -> None:
        url = shm_url()
        async with await aio.listen(url, max_frame=1000) as listener:
            accepting = asyncio.ensure_future(listener.accept(timeout=10))
            c = await aio.connect(url, timeout=10)
            s = await accepting
            async with c, s:
                for batch, error in bad_batches:
                    with pytest.raises(error):
                        await c.send_many(batch)
                await c.send(b"end")
                assert await s.recv_many(timeout=5) == [b"end"]

    asyncio.run(main())


def test_asyncio_send_many_that_times_out_says_how_many_were_sent(
    shm_url: Callable[[], str],
) -> None:
    """As the ring's (tests/shm/test_ring.py): the Timeout of a batch cut short by a full ring
    says how many of its messages went (it said "nothing was sent")."""
    url = shm_url()

    async def main() -> None:
        async with await aio.listen(url) as listener:
            accepting = asyncio.ensure_future(listener.accept(timeout=10))
            c = await aio.connect(url, capacity="4K", timeout=10)
            s = await accepting
            async with c, s:
                with pytest.raises(ipcwire.errors.Timeout) as caught:
                    await c.send_many([b"m" * 500] * 20, timeout=0.01)
                got = 0
                while True:
                    try:
                        assert await s.recv(timeout=0) == b"m" * 500
                    except ipcwire.errors.Timeout:
                        break
                    got += 1
                assert 0 < got < 20
                assert f"after {got} of its 20 messages" in str(caught.value)

    asyncio.run(main())


def test_asyncio_send_many_timeout_is_for_the_whole_batch(shm_url: Callable[[], str]) -> None:
    """timeout= bounds the whole send_many, as on the blocking driver; the asyncio one gave
    each message the full timeout, so a slow reader that freed room in time for each message
    made a batch with timeout=0.5 take 1.3 s (20 messages through a ring of 7) and succeed."""
    url = shm_url()

    async def main() -> None:
        async with await aio.listen(url) as listener:
            accepting = asyncio.ensure_future(listener.accept(timeout=10))
            c = await aio.connect(url, capacity="4K", timeout=10)
            s = await accepting

            async def slow_reader() -> None:  # a message every 0.1 s (the peer's pace)
                with contextlib.suppress(ipcwire.errors.IpcwireError):
                    while True:
                        await asyncio.sleep(0.1)
                        await s.recv(timeout=10)

            reading = asyncio.ensure_future(slow_reader())
            async with c, s:
                with pytest.raises(ipcwire.errors.Timeout, match="of its 20 messages"):
                    await c.send_many([b"m" * 500] * 20, timeout=0.5)
            await reading

    asyncio.run(main())


def test_asyncio_a_call_waiting_for_another_tasks_call_keeps_its_timeout(
    shm_url: Callable[[], str],
) -> None:
    """Sends on one channel take turns; one waiting for another task's send gives up at its
    own timeout (Timeout), as threads do on the blocking driver. It waited on the channel's
    lock without one: send(timeout=0.05) behind an untimed send waited forever. A second
    task receiving is refused at once (LocalProtocolError, as on every mechanism: c1c18ed)."""
    url = shm_url()

    async def main() -> None:
        async with await aio.listen(url) as listener:
            accepting = asyncio.ensure_future(listener.accept(timeout=10))
            c = await aio.connect(url, capacity="4K", timeout=10)
            s = await accepting
            assert isinstance(c, AioShmChannel)
            receiving = asyncio.ensure_future(c.recv())  # holds the turn: nothing comes
            while True:  # fill the ring; then a sender holds the turn, waiting for room
                try:
                    await c.send(b"z" * 500, timeout=0)
                except ipcwire.errors.Timeout:
                    break
            sending = asyncio.ensure_future(c.send(b"y" * 500))
            await asyncio.sleep(0)  # both start and wait
            receives: list[Callable[[], Awaitable[object]]] = [
                lambda: c.recv(timeout=0.05),
                lambda: c.recv_many(timeout=0.05),
                lambda: c.recv_view(timeout=0),
            ]
            sends: list[Callable[[], Awaitable[object]]] = [
                lambda: c.send(b"x", timeout=0.05),
                lambda: c.send_many([b"x"], timeout=0.05),
                lambda: c.loan(1, timeout=0),
            ]
            async with asyncio.timeout(10):  # (a guard: fails instead of hanging)
                for call in receives:
                    with pytest.raises(
                        ipcwire.errors.LocalProtocolError, match="another task is already receiving"
                    ):
                        await call()
                for call in sends:
                    with pytest.raises(ipcwire.errors.Timeout, match="another task"):
                        await call()
            assert not receiving.done() and not sending.done()
            await c.aclose()
            await s.aclose()
            for task in (receiving, sending):
                with pytest.raises(ipcwire.errors.ChannelClosed):
                    await task

    asyncio.run(main())


def test_asyncio_listener_close_leaves_the_loop_watching_nothing_it_closed(
    shm_url: Callable[[], str],
) -> None:
    """The listener closed its socket while the loop still watched it (the cancelled accept
    unwatches only when the loop next runs): the next socket got the same fd number and the
    loop never saw it, so a tcp listener made next in the same loop never accepted."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with await aio.listen(shm_url()) as listener:
            fd = listener._sock.fileno()  # type: ignore[attr-defined]
            accepting = asyncio.ensure_future(listener.accept(timeout=10))
            async with await aio.connect(listener.url, timeout=10) as client:
                await (await accepting).aclose()
                assert client is not None
        watched = loop._selector.get_map()  # type: ignore[attr-defined]
        assert fd not in watched, "the closed listener's fd is still watched"
        async with await aio.listen("tcp://127.0.0.1:0") as tcp:
            accepting = asyncio.ensure_future(tcp.accept(timeout=10))
            async with await aio.connect(tcp.url, timeout=10) as client:
                server = await accepting
                await client.send(b"after shm")
                assert await server.recv(timeout=10) == b"after shm"
                await server.aclose()

    asyncio.run(main())

"""Review of gRPC batches and the asyncio writer task (docs/mechanisms/grpc.md, "Batches" and
"Threads and loops"): hostile batches, the marker escape and the peer's limit end to end, many
senders at once (each send that returns is delivered once, in its task's order; one that times
out or is cancelled while it waits for room is not), and a send cancelled mid-write."""

from __future__ import annotations

import asyncio
import random
import struct
import threading
from typing import Any

import pytest

import ipcwire
from ipcwire import aio
from ipcwire.errors import ChannelBroken, EndOfChannel, RemoteProtocolError, Timeout
from ipcwire.grpc._channel import LINGER
from ipcwire.grpc._protocol import BATCH_BYTES, BATCH_MESSAGES, plan_batches, unpack_batch

MARKER = b"\xc1ipcwB\x00\x01"  # as documented


def batch(*items: bytes) -> bytes:
    return MARKER + b"".join(struct.pack("<I", len(d)) + d for d in items)


# Raw messages that look like batches, or like parts of one: each must arrive as it was sent.
LOOKALIKES = [
    MARKER,
    batch(b"a", b"b"),  # a well-formed batch, sent as one message
    batch(b""),
    MARKER + b"\xff\xff\xff\xff",
    MARKER[:7],
    b"",
    MARKER + MARKER,
    b"x" + MARKER,
]


# -- the format ------------------------------------------------------------------------------
def test_unpack_batch_on_hostile_input() -> None:
    """Anything after the marker is either refused with RemoteProtocolError, read as a
    failed client's goodbye (ChannelBroken: the length 0xFFFFFFFF first, then a reason), or
    unpacks into messages that account for every byte of it (never part of a batch, never
    another error)."""
    rnd = random.Random(7)
    good = batch(b"abc", b"", b"d" * 300, MARKER)
    cases = [good[:n] for n in range(len(MARKER), len(good) + 1)]  # every truncation
    for _ in range(3000):
        kind = rnd.randrange(3)
        if kind == 0:  # random bytes
            body = bytes(rnd.randrange(256) for _ in range(rnd.randrange(40)))
        elif kind == 1:  # a good batch with a few bytes changed
            changed = bytearray(good[len(MARKER) :])
            for _ in range(rnd.randrange(1, 4)):
                changed[rnd.randrange(len(changed))] = rnd.randrange(256)
            body = bytes(changed)
        else:  # plausible lengths, some of them lies
            body = b"".join(
                struct.pack("<I", rnd.choice((0, 1, 3, 2**32 - 1, 2**31))) + b"z" * rnd.randrange(4)
                for _ in range(rnd.randrange(1, 5))
            )
        cases.append(MARKER + body)
    refused = 0
    for msg in cases:
        try:
            out = unpack_batch(msg, "grpc://x")
        except RemoteProtocolError:
            refused += 1
            continue
        except ChannelBroken as exc:
            assert msg[len(MARKER) : len(MARKER) + 4] == b"\xff" * 4, msg
            assert "after an error on its side" in str(exc)
            assert all(c.isprintable() for c in str(exc))
            continue
        assert batch(*out) == msg and (out or msg == MARKER)  # (empty: the goodbye)
    assert unpack_batch(good, "grpc://x") == [b"abc", b"", b"d" * 300, MARKER]
    assert 0 < refused < len(cases)


@pytest.mark.parametrize("limit", [1, 12, 13, 20, 100, 1000, 300_000, 1 << 30])
def test_plan_batches_never_passes_the_limit(limit: int) -> None:
    """Every gRPC message fits the peer's limit and BATCH_BYTES; every message is in exactly
    one, in order; the counts and sizes given back add up (the writers' accounting)."""
    rnd = random.Random(limit)
    for _ in range(200):
        items = []
        for _ in range(rnd.randrange(1, 60)):
            room = min(limit, 70_000) - 2 * len(MARKER) - 4  # so that marker_check passes
            if rnd.random() < 0.2 and room >= 0:
                items.append(MARKER + b"m" * rnd.randrange(room + 1))
            else:
                items.append(b"i" * rnd.randrange(0, min(limit, 70_000) + 1))
        out: list[bytes] = []
        for wire, count, size in plan_batches(items, limit):
            assert len(wire) <= limit
            if wire.startswith(MARKER):
                assert len(wire) <= max(BATCH_BYTES, len(MARKER) + 4 + size)
                got = unpack_batch(wire, "u")
            else:
                got = [wire]
            assert len(got) == count <= BATCH_MESSAGES and sum(map(len, got)) == size
            out += got
        assert out == items


# -- end to end ------------------------------------------------------------------------------
LIMIT = 1000


def _traffic(seed: int) -> list[bytes]:
    """Messages up to the limit (lookalikes up to 12 bytes under it), for batches to fill."""
    rnd = random.Random(seed)
    out = list(LOOKALIKES)
    for i in range(400):
        if i % 9 == 0:
            out.append(MARKER + b"k" * rnd.randrange(LIMIT - 2 * len(MARKER) - 4 + 1))
        else:
            out.append(bytes([i % 256]) * rnd.choice((0, 1, 50, LIMIT // 3, LIMIT)))
    return out


def test_blocking_lookalikes_and_the_limit() -> None:
    """Both sides refuse more than LIMIT bytes (grpcio would end the stream if a batch passed
    it): one message at a time, send_many, and echoes, everything arrives as it was sent."""
    msgs = _traffic(1)
    with (
        ipcwire.listen("grpc://127.0.0.1:0", max_frame=LIMIT) as lis,
        ipcwire.connect(lis.url, max_frame=LIMIT) as c,
        lis.accept(timeout=10) as s,
    ):
        for m in msgs:
            c.send(m)
        c.send_many(msgs)
        got = [s.recv(timeout=10) for _ in range(2 * len(msgs))]
        assert got == msgs * 2
        for m in LOOKALIKES:
            s.send(m)  # alone
            assert c.recv(timeout=10) == m
        s.send_many(msgs)
        for m in msgs:
            s.send(m)
        assert [c.recv(timeout=10) for _ in range(2 * len(msgs))] == msgs * 2


def test_asyncio_lookalikes_and_the_limit() -> None:
    """The same in asyncio, through each write path: the direct write (a send right after a
    receive), the writer task (sends in a row) and send_many."""
    msgs = _traffic(2)

    async def main() -> None:
        async with (
            await aio.listen("grpc://127.0.0.1:0", max_frame=LIMIT) as lis,
            await aio.connect(lis.url, max_frame=LIMIT) as c,
            await lis.accept(timeout=10) as s,
        ):
            for m in msgs:  # after the first, queued
                await c.send(m)
            await c.send_many(msgs)
            got = [await s.recv() for _ in range(2 * len(msgs))]
            assert got == msgs * 2
            for m in msgs:  # ping-pong: every send follows a receive, so it writes directly
                await c.send(m)
                assert await s.recv() == m
                await s.send(m)
                assert await c.recv() == m
            await s.send_many(msgs)
            for m in msgs:
                await s.send(m)
            assert [await c.recv() for _ in range(2 * len(msgs))] == msgs * 2

    asyncio.run(main())


# -- many senders ----------------------------------------------------------------------------
TASKS, PER = 5, 600


def _msg(k: int, i: int, pad: int) -> bytes:
    return struct.pack("<HI", k, i) + b"p" * pad


def _check(got: list[bytes], delivered: dict[int, list[int]]) -> None:
    """Each sender's messages arrived once and in order: those whose send returned."""
    seen: dict[int, list[int]] = {}
    for m in got:
        k, i = struct.unpack_from("<HI", m)
        seen.setdefault(k, []).append(i)
    assert seen == {k: v for k, v in delivered.items() if v}


def test_asyncio_many_senders_then_close() -> None:
    """Tasks sending at once with send, send(timeout=) (some time out waiting for room),
    send_many, and sends cancelled while they wait; the client closes right after. The server
    gets exactly the messages whose send returned, each task's in order, then the end; the
    statistics count exactly those. The server answers now and then, so that direct writes
    (a send after a receive) and its writer task mix on its side. (The client receives
    nothing, and its first send is a plain one: a send after a receive, or a channel's first,
    writes in the caller's task, and cancelling one of those ends the stream, see
    test_asyncio_send_cancelled_mid_write.)"""

    async def main() -> None:
        async with (
            await aio.listen("grpc://127.0.0.1:0") as lis,
            await aio.connect(lis.url) as c,
            await lis.accept(timeout=10) as s,
        ):
            delivered: dict[int, list[int]] = {k: [] for k in range(TASKS)}
            refused = {"timeout": 0, "cancelled": 0}
            got: list[bytes] = []

            async def sender(k: int) -> None:
                rnd = random.Random(k)
                i = 0
                while i < PER:
                    pad = rnd.choice((0, 8, 100, 5000, 70_000))
                    how = rnd.randrange(5)
                    if how == 0:
                        await c.send(_msg(k, i, pad))
                        delivered[k].append(i)
                    elif how == 1:
                        try:
                            await c.send(_msg(k, i, pad), timeout=rnd.choice((0, 1e-4, 10)))
                            delivered[k].append(i)
                        except Timeout:
                            refused["timeout"] += 1
                    elif how == 2:
                        n = rnd.randrange(1, 30)
                        await c.send_many(_msg(k, i + j, pad) for j in range(n))
                        delivered[k] += range(i, i + n)
                        i += n - 1
                    else:
                        try:
                            async with asyncio.timeout(rnd.choice((0, 1e-4))):
                                await c.send(_msg(k, i, pad))
                            delivered[k].append(i)
                        except TimeoutError:  # cancelled while it waited for room
                            refused["cancelled"] += 1
                    i += 1

            async def server() -> None:
                assert await s.recv() == b"first"
                while True:
                    try:
                        m = await s.recv()
                    except EndOfChannel:
                        return
                    got.append(m)
                    if len(got) % 50 == 0:
                        await s.send(m[:6])  # the direct write
                        await s.send_many([m[:6]])  # queued behind nothing, or the writer

            serving = asyncio.ensure_future(server())
            await c.send(b"first")  # a channel's first send writes directly, as after a receive
            await asyncio.gather(*(sender(k) for k in range(TASKS)))
            total = sum(map(len, delivered.values()))
            stats = c.statistics()
            await c.aclose()
            await asyncio.wait_for(serving, 30)
            _check(got, delivered)
            assert stats.messages_sent - 1 == total == len(got)
            assert stats.bytes_sent - len(b"first") == sum(map(len, got))
            assert s.statistics().messages_received - 1 == total
            assert refused["timeout"] and refused["cancelled"]  # both paths were exercised

    asyncio.run(main())


def test_asyncio_server_streams_then_closes() -> None:
    """Server tasks send at once (room waits included) and the server closes right after:
    the client reads every message, each task's in order, then EndOfChannel."""

    async def main() -> None:
        async with await aio.listen("grpc://127.0.0.1:0") as lis:
            got: list[bytes] = []

            async def handler(ch: aio.AioChannel) -> None:
                async def sender(k: int) -> None:
                    for i in range(PER):
                        if i % 7 == 0:
                            await ch.send_many([_msg(k, i, 3000)])
                        else:
                            await ch.send(_msg(k, i, i % 3 * 20_000))

                await ch.recv()
                await asyncio.gather(*(sender(k) for k in range(TASKS)))
                await ch.aclose()

            serving = asyncio.ensure_future(lis.serve(handler))
            async with await aio.connect(lis.url) as c:
                await c.send(b"go")
                with pytest.raises(EndOfChannel):
                    while True:
                        got.append(await c.recv())
            lis.close()
            await asyncio.wait_for(serving, 10)
            _check(got, {k: list(range(PER)) for k in range(TASKS)})

    asyncio.run(main())


def test_blocking_many_senders_then_close() -> None:
    """The same with threads on a blocking client: send, send(timeout=) (some time out),
    send_many; close right after; the server gets exactly what was sent, in order per thread."""
    delivered: dict[int, list[int]] = {k: [] for k in range(TASKS)}
    timeouts = [0]
    got: list[bytes] = []
    with ipcwire.listen("grpc://127.0.0.1:0") as lis:

        def serve() -> None:
            with lis.accept(timeout=10) as ch:
                while True:
                    try:
                        got.append(ch.recv())
                    except EndOfChannel:
                        return

        t = threading.Thread(target=serve)
        t.start()
        with ipcwire.connect(lis.url) as c:

            def sender(k: int) -> None:
                rnd = random.Random(k)
                i = 0
                while i < PER:
                    pad = rnd.choice((0, 8, 100, 5000, 70_000))
                    how = rnd.randrange(3)
                    if how == 0:
                        c.send(_msg(k, i, pad))
                        delivered[k].append(i)
                    elif how == 1:
                        try:
                            c.send(_msg(k, i, pad), timeout=rnd.choice((0, 1e-4, 10)))
                            delivered[k].append(i)
                        except Timeout:
                            timeouts[0] += 1
                    else:
                        n = rnd.randrange(1, 30)
                        c.send_many(_msg(k, i + j, pad) for j in range(n))
                        delivered[k] += range(i, i + n)
                        i += n - 1
                    i += 1

            threads = [threading.Thread(target=sender, args=(k,)) for k in range(TASKS)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            stats = c.statistics()
        t.join(30)
        assert not t.is_alive()
    _check(got, delivered)
    assert stats.messages_sent == sum(map(len, delivered.values())) == len(got)
    assert stats.bytes_sent == sum(map(len, got))


# -- a send cancelled while grpc writes its message -------------------------------------------
@pytest.mark.parametrize("side", ["server", "client"])
def test_asyncio_send_cancelled_mid_write(side: str) -> None:
    """A send right after a receive writes in the caller's task; cancelling that task while
    grpc.aio is writing (the peer is not reading, so flow control holds the write) must not
    let a later send report success for a message that never arrives."""

    async def main() -> None:
        async with (
            await aio.listen("grpc://127.0.0.1:0") as lis,
            await aio.connect(lis.url) as cl,
            await lis.accept(timeout=10) as sv,
        ):
            a, b = (sv, cl) if side == "server" else (cl, sv)
            await b.send(b"hello")
            assert await a.recv() == b"hello"
            big = b"B" * (32 << 20)  # more than HTTP/2's windows: the write waits for b
            parked = asyncio.Event()

            async def send_big() -> None:
                parked.set()
                await a.send(big)

            task = asyncio.ensure_future(send_big())
            await parked.wait()  # send_big is now inside grpc.aio's write
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            try:
                await a.send(b"after")
                sent = True
            except ChannelBroken:
                sent = False
            got: list[Any] = []
            a.close()
            try:
                while True:
                    got.append(await b.recv(timeout=10))
            except (EndOfChannel, ChannelBroken):
                pass
            assert (b"after" in got) == sent

    asyncio.run(main())


def test_asyncio_server_senders_learn_that_the_client_closed() -> None:
    """An ipcwire client that closes ends the channel, though grpc still holds the server's
    write (the client never read, so flow control stops it): a server task waiting for room
    gets ChannelBroken, and the server's aclose() does not wait LINGER for that write."""

    async def main() -> None:
        async with (
            await aio.listen("grpc://127.0.0.1:0") as lis,
            await aio.connect(lis.url) as cl,
            await lis.accept(timeout=10) as sv,
        ):
            await cl.send(b"hello")
            assert await sv.recv() == b"hello"
            await sv.send(b"B" * (32 << 20), timeout=0)  # queued: more than the windows
            with pytest.raises(Timeout):
                await sv.send(b"next", timeout=0)  # the queue is full
            parked = asyncio.Event()

            async def waiting_sender() -> None:
                parked.set()
                await sv.send(b"waits for room")

            sender = asyncio.ensure_future(waiting_sender())
            await parked.wait()
            assert not sender.done()
            await cl.aclose()
            with pytest.raises(EndOfChannel):
                await sv.recv()
            # A guard against a hang, well under LINGER (what aclose() waited before).
            async with asyncio.timeout(LINGER / 4):
                with pytest.raises(ChannelBroken):
                    await sender
                await sv.aclose()

    asyncio.run(main())


def test_asyncio_client_that_left_drains_the_server() -> None:
    """A client that closes without reading what the server was sending reads and drops the
    rest until the server ends the RPC, so flow control does not hold the server's write (and
    the end of its RPC, and its handler slot) until the client gives up after LINGER."""

    async def main() -> None:
        async with (
            await aio.listen("grpc://127.0.0.1:0") as lis,
            await aio.connect(lis.url) as cl,
            await lis.accept(timeout=10) as sv,
        ):
            await cl.send(b"hello")
            assert await sv.recv() == b"hello"
            # After a receive, send() writes in this task: held until the client reads.
            write = asyncio.ensure_future(sv.send(b"B" * (32 << 20)))
            await cl.aclose()
            with pytest.raises(EndOfChannel):
                await sv.recv()
            async with asyncio.timeout(LINGER / 4):  # a guard against the old 60 s hang
                try:
                    await write
                except ChannelBroken:
                    pass  # also fine: the RPC ended first; what matters is that it ended
                await sv.aclose()

    asyncio.run(main())

"""The conformance suite, asyncio API (the same properties as the blocking suite)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from ipcwire import aio
from ipcwire.aio.channel import AioChannel
from ipcwire.errors import (
    ChannelBroken,
    ChannelClosed,
    ConnectionRefused,
    EndOfChannel,
    FrameTooLarge,
    IpcwireError,
    LocalProtocolError,
    Timeout,
)
from ipcwire.registry import Capabilities
from ipcwire.testing._samples import (
    SAMPLES,
    TOKEN,
    ConformanceError,
    ProbeFailure,
    bytes_likes,
    check_tagged,
    close_burst,
    expect,
    expect_failure_told,
    expect_five_of_ten,
    expect_unsendable,
    max_size_for,
    payload,
    same,
    tagged,
    tagged_sizes,
    unencodable,
)

__all__ = ["acheck_channel", "apair_from_url"]

AMakePair = Callable[..., AbstractAsyncContextManager[tuple[AioChannel, AioChannel]]]
_WAIT = 10.0


def apair_from_url(url: Callable[[], str]) -> AMakePair:
    """An async ``make_pair`` for listener mechanisms: listen, connect, accept."""

    @contextlib.asynccontextmanager
    async def make(**options: Any) -> AsyncIterator[tuple[AioChannel, AioChannel]]:
        async with await aio.listen(url(), **options) as listener:
            accepting = asyncio.ensure_future(listener.accept(timeout=_WAIT))
            try:
                client = await aio.connect(listener.url, timeout=_WAIT, **options)
            except BaseException:
                accepting.cancel()
                raise
            server = await accepting
            async with client, server:
                yield client, server

    return make


async def acheck_channel(
    make_pair: AMakePair,
    capabilities: Capabilities,
    *,
    url: Callable[[], str] | None = None,
    codecs: tuple[str, ...] = ("bytes", "json", "msgpack", "pickle"),
) -> None:
    """Run every asyncio check that ``capabilities`` allows.

    Raises:
        ConformanceError: naming the property that does not hold.
    """
    caps = capabilities
    if caps.max_message_size == 0:
        return  # carries no payload (signals): nothing here applies
    await _codecs(make_pair, caps, codecs)
    if "bytes" in codecs:
        await _bytes_like(make_pair, caps)
    if caps.reliable and caps.ordered:
        await _ordering(make_pair)
    if caps.message_boundaries:
        await _empty_and_max(make_pair, caps)
    if caps.reliable and caps.message_boundaries:
        await _concurrent_senders(make_pair, caps)
        await _concurrent_receivers(make_pair, caps)
    await _unsendable(make_pair, caps)
    await _timeouts(make_pair)
    await _close_semantics(make_pair, caps)
    if caps.tells_failure and caps.bidirectional:
        await _failure_told(make_pair)
    await _close_wakes_receiver(make_pair)
    await _statistics(make_pair, caps)
    if caps.bidirectional:
        await _request(make_pair, caps)
    if url is not None and caps.multi_client:
        if caps.bidirectional:  # the check uses request()
            await _concurrent_clients(url)
        await _listener_close(url)


async def _codecs(make_pair: AMakePair, caps: Capabilities, codecs: tuple[str, ...]) -> None:
    limit = max_size_for(caps)
    for codec in codecs:
        opts: dict[str, Any] = {"codec": codec}
        if codec == "pickle":
            opts["token"] = TOKEN
        samples = [s for s in SAMPLES[codec] if not isinstance(s, bytes) or len(s) < limit // 2]
        async with make_pair(**opts) as (a, b):
            for msg in samples:
                await a.send(msg, timeout=_WAIT)
                got = await b.recv(timeout=_WAIT)
                expect(same(got, msg), f"codec {codec}: sent {msg!r:.60}, received {got!r:.60}")
                if caps.bidirectional:
                    await b.send(got, timeout=_WAIT)
                    back = await a.recv(timeout=_WAIT)
                    expect(
                        same(back, msg), f"codec {codec}: the reply direction changed {msg!r:.60}"
                    )


async def _bytes_like(make_pair: AMakePair, caps: Capabilities) -> None:
    """Any bytes-like object goes out as its bytes, alone and in send_many."""
    objs = bytes_likes()
    async with make_pair(codec="bytes") as (a, b):
        for obj in objs:
            await a.send(obj, timeout=_WAIT)
            got = await b.recv(timeout=_WAIT)
            want = memoryview(obj).tobytes()
            expect(got == want, f"sent {type(obj).__name__} {want!r:.40}, received {got!r:.40}")
        if caps.reliable and caps.ordered:
            await a.send_many(objs, timeout=_WAIT)
            got_many = await _receive(b, len(objs), "send_many of bytes-like objects")
            want_many = [memoryview(o).tobytes() for o in objs]
            expect(got_many == want_many, f"send_many of bytes-like objects gave {got_many!r:.80}")


async def _receive(b: AioChannel, n: int, what: str) -> list[Any]:
    """``n`` messages by recv_many; a ConformanceError saying how many came if they stop."""
    got: list[Any] = []
    while len(got) < n:
        try:
            got.extend(await b.recv_many(timeout=_WAIT))
        except Timeout:
            raise ConformanceError(
                f"{what}: {len(got)} of {n} messages arrived, then nothing for {_WAIT} s "
                f"(messages lost)"
            ) from None
    return got


async def _ordering(make_pair: AMakePair) -> None:
    n = 2000
    async with make_pair(codec="msgpack") as (a, b):

        async def produce() -> None:
            for i in range(0, n, 100):
                await a.send_many([[i + j, payload(16, i + j)] for j in range(100)], timeout=_WAIT)

        task = asyncio.ensure_future(produce())
        try:
            received = await _receive(b, n, "ordering (send_many in batches of 100)")
        except ConformanceError:
            task.cancel()  # it may wait for room the receiver no longer makes
            with contextlib.suppress(asyncio.CancelledError, IpcwireError):
                await task
            raise
        await task
        for i, msg in enumerate(received):
            expect(
                msg == [i, payload(16, i)], f"message {i} out of order or corrupted: {msg!r:.60}"
            )


async def _concurrent_senders(make_pair: AMakePair, caps: Capabilities) -> None:
    """Tasks sending on one channel at once: each message arrives once and whole (their
    writes never interleave, even when a send waits for room part-way), each task's in the
    order it sent them."""
    senders, sizes = 4, tagged_sizes(caps, 24)
    async with make_pair(codec="bytes") as (a, b):

        async def produce(k: int) -> None:
            for seq, size in enumerate(sizes):
                await a.send(tagged(k, seq, size), timeout=_WAIT)

        sending = asyncio.ensure_future(asyncio.gather(*(produce(k) for k in range(senders))))
        try:
            got = await _receive(b, senders * len(sizes), "tasks sending at once")
        except BaseException:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError, IpcwireError):
                await sending
            raise
        await sending
        check_tagged(got, senders, sizes, ordered=caps.ordered)


async def _concurrent_receivers(make_pair: AMakePair, caps: Capabilities) -> None:
    """Tasks receiving from one channel at once: between them, each message once and whole.
    A mechanism may instead refuse a second receiving task with ``LocalProtocolError`` (most
    do, as websockets does); it must never split or lose a message."""
    sizes = tagged_sizes(caps, 48)
    async with make_pair(codec="bytes") as (a, b):
        got: list[Any] = []

        async def consume() -> None:
            while len(got) < len(sizes):
                try:
                    got.append(await b.recv(timeout=0.2))  # a turn: another may take the last
                except Timeout:
                    continue
                except LocalProtocolError:
                    return  # another task is receiving: refused, which the contract allows

        receiving = [asyncio.ensure_future(consume()) for _ in range(3)]
        try:
            for seq, size in enumerate(sizes):
                await a.send(tagged(0, seq, size), timeout=_WAIT)
            await asyncio.wait(receiving, timeout=_WAIT * 2)
        finally:
            for task in receiving:
                task.cancel()
            results = await asyncio.gather(*receiving, return_exceptions=True)
        failed = [r for r in results if not isinstance(r, asyncio.CancelledError | None)]
        expect(not failed, f"tasks receiving at once: {failed[:2]}")
        check_tagged(got, 1, sizes, ordered=False)


async def _empty_and_max(make_pair: AMakePair, caps: Capabilities) -> None:
    size = max_size_for(caps)
    async with make_pair(codec="bytes", max_frame=size) as (a, b):
        await a.send(b"", timeout=_WAIT)
        expect(await b.recv(timeout=_WAIT) == b"", "a 0-byte message did not arrive as b''")
        big = payload(size, 7)
        receiving = asyncio.ensure_future(b.recv(timeout=_WAIT))
        await a.send(big, timeout=_WAIT)
        got = await receiving
        expect(got == big, f"a max-size message ({size} bytes) arrived altered ({len(got)} bytes)")
        try:
            await a.send(payload(size + 1), timeout=_WAIT)
        except FrameTooLarge as exc:
            expect(exc.size == size + 1 and exc.limit == size, f"FrameTooLarge fields: {exc!r}")
        else:
            raise ConformanceError(f"sending {size + 1} bytes over max_frame={size} was accepted")
        await a.send(b"after", timeout=_WAIT)
        got = await b.recv(timeout=_WAIT)
        expect(got == b"after", f"after an oversized send the next message was {got!r:.60}")


async def _unsendable(make_pair: AMakePair, caps: Capabilities) -> None:
    """As the blocking check: refused with LocalProtocolError naming the endpoint, nothing
    sent, the channel goes on."""
    async with make_pair(codec="json") as (a, b):
        for what, obj in unencodable():
            err: BaseException | None = None
            try:
                await a.send(obj, timeout=_WAIT)
            except Exception as exc:  # (the check says what it was)
                err = exc
            expect_unsendable(err, what, a.url)
        if caps.reliable:
            await a.send({"after": "refusals"}, timeout=_WAIT)
            got = await b.recv(timeout=_WAIT)
            expect(got == {"after": "refusals"}, f"after the refusals, received {got!r:.60}")


async def _timeouts(make_pair: AMakePair) -> None:
    async with make_pair() as (a, b):
        try:
            await b.recv_nowait()
        except Timeout:
            pass
        else:
            raise ConformanceError("recv_nowait() returned without a message")
        for wait in (0, 0.05):
            start = time.monotonic()
            try:
                await b.recv(timeout=wait)
            except Timeout as exc:
                expect(isinstance(exc, TimeoutError), "Timeout must also be a TimeoutError")
            else:
                raise ConformanceError(f"recv(timeout={wait}) returned without a message")
            expect(time.monotonic() - start >= wait * 0.9, f"recv(timeout={wait}) returned early")
        await a.send(b"still usable", timeout=_WAIT)
        expect(await b.recv(timeout=_WAIT) == b"still usable", "the channel broke after a Timeout")


async def _burst_then_close(a: AioChannel, b: AioChannel, burst: list[bytes], who: str) -> None:
    """A task sends ``burst`` on ``a`` (half by ``send_many``) and closes it at once; ``b``
    receives every message whole and in order, then EndOfChannel."""

    async def send_and_close() -> None:
        await a.send_many(burst[:6], timeout=_WAIT)
        for m in burst[6:]:
            await a.send(m, timeout=_WAIT)
        await a.aclose()

    sender = asyncio.ensure_future(send_and_close())
    got: list[Any] = []
    try:
        while len(got) < len(burst):
            got.append(await b.recv(timeout=_WAIT))
    except IpcwireError as exc:
        sender.cancel()
        raise ConformanceError(
            f"{who}: {len(got)} of the {len(burst)} messages sent right before aclose() "
            f"arrived, then {type(exc).__name__}: {exc} (messages lost)"
        ) from exc
    try:
        await asyncio.wait_for(sender, _WAIT)
    except Exception as exc:
        raise ConformanceError(f"{who}: sending, then aclose(): {exc!r}") from exc
    expect(got == burst, f"{who}: messages sent right before aclose() arrived changed")
    try:
        await b.recv(timeout=_WAIT)
    except EndOfChannel:
        pass
    else:
        raise ConformanceError(f"{who}: recv after the peer closed did not raise EndOfChannel")


async def _failure_told(make_pair: AMakePair) -> None:
    """An ``async with`` block left by an exception is not a clean close (both ways)."""
    for direction in ("client to server", "server to client"):
        async with make_pair() as pair:
            a, b = pair if direction == "client to server" else pair[::-1]
            try:
                async with a:
                    await a.send(b"before", timeout=_WAIT)
                    raise ProbeFailure
            except ProbeFailure:
                pass
            got = await b.recv(timeout=_WAIT)
            expect(same(got, b"before"), f"{direction}: a message was lost")
            end: BaseException | None = None
            try:
                await b.recv(timeout=_WAIT)
            except IpcwireError as exc:
                end = exc
            expect_failure_told(end, direction)


async def _close_semantics(make_pair: AMakePair, caps: Capabilities) -> None:
    checked = caps.reliable and caps.end_of_channel
    burst = close_burst(caps)
    async with make_pair() as (a, b):
        if checked:
            await _burst_then_close(a, b, burst, "client to server")
        else:
            await a.send(b"last", timeout=_WAIT)
        await a.aclose()
        await a.aclose()
        expect(a.closed, "closed is False after aclose()")
        for op in (a.send(b"x"), a.recv(timeout=0)):
            try:
                await op
            except ChannelClosed:
                pass
            else:
                raise ConformanceError("using a closed channel did not raise ChannelClosed")
        if checked:
            expect([m async for m in b] == [], "async iteration did not end at EndOfChannel")
    if checked and caps.bidirectional:
        async with make_pair() as (a, b):
            await _burst_then_close(b, a, burst, "server to client")
        async with make_pair() as (a, b):
            await b.aclose()
            deadline = time.monotonic() + _WAIT
            while True:
                try:
                    await a.send(payload(65536), timeout=_WAIT)
                    await asyncio.sleep(0)  # let the loop see the peer's close; not a timing wait
                except ChannelBroken:
                    break
                except EndOfChannel as exc:
                    raise ConformanceError(
                        "send raised EndOfChannel; it must be ChannelBroken"
                    ) from exc
                expect(time.monotonic() < deadline, "sending to a closed peer never failed")


async def _close_wakes_receiver(make_pair: AMakePair) -> None:
    async with make_pair() as (_a, b):
        receiving = asyncio.ensure_future(b.recv(timeout=_WAIT * 3))
        await asyncio.sleep(0)  # let recv() start waiting
        b.close()
        try:
            await asyncio.wait_for(receiving, _WAIT)
        except ChannelClosed:
            pass
        except BaseException as exc:
            raise ConformanceError(f"recv() interrupted by close() raised {exc!r}") from exc
        else:
            raise ConformanceError("recv() interrupted by close() returned a message")


async def _statistics(make_pair: AMakePair, caps: Capabilities) -> None:
    async with make_pair() as (a, b):
        for i in range(5):
            await a.send(payload(10, i), timeout=_WAIT)
            if not caps.reliable:  # an unreliable mechanism may keep only the latest
                await b.recv(timeout=_WAIT)
        for _ in range(5 if caps.reliable else 0):
            await b.recv(timeout=_WAIT)
        expect_five_of_ten(a.statistics(), b.statistics())


async def _request(make_pair: AMakePair, caps: Capabilities) -> None:
    async with make_pair(codec="json") as (a, b):

        async def echo() -> None:
            async for msg in b:
                await b.send({"echo": msg})

        task = asyncio.ensure_future(echo())
        for i in range(20):
            reply = await a.request({"n": i}, timeout=_WAIT)
            expect(reply == {"echo": {"n": i}}, f"request() got {reply!r}")
        if caps.reliable and caps.ordered:
            await _concurrent_requests(a)
        await a.aclose()
        if caps.reliable:  # an unreliable mechanism cannot tell the peer it closed
            await asyncio.wait_for(task, _WAIT)
        else:
            task.cancel()


async def _concurrent_requests(a: AioChannel) -> None:
    """Tasks calling request() on one channel at once: each gets the reply to its own
    request (the peer answers in order), never another task's."""
    wrong: list[Any] = []

    async def ask(k: int) -> None:
        for i in range(25):
            reply = await a.request({"t": k, "n": i}, timeout=_WAIT)
            if reply != {"echo": {"t": k, "n": i}}:
                wrong.append(({"t": k, "n": i}, reply))

    await asyncio.gather(*(ask(k) for k in range(4)))
    expect(not wrong, f"tasks calling request() at once got others' replies: {wrong[:2]}")


async def _concurrent_clients(url: Callable[[], str]) -> None:
    clients, rounds = 8, 25
    async with await aio.listen(url(), codec="json") as listener:

        async def echo(ch: AioChannel) -> None:
            async for msg in ch:
                await ch.send(msg)

        server = asyncio.ensure_future(listener.serve(echo))

        async def client(k: int) -> None:
            async with await aio.connect(listener.url, codec="json", timeout=_WAIT) as ch:
                for i in range(rounds):
                    got = await ch.request([k, i], timeout=_WAIT)
                    expect(got == [k, i], f"client {k} got {got!r}")

        await asyncio.wait_for(asyncio.gather(*(client(k) for k in range(clients))), _WAIT * 3)
        listener.close()
        await asyncio.wait_for(server, _WAIT)


async def _listener_close(url: Callable[[], str]) -> None:
    listener = await aio.listen(url())
    where = listener.url
    accepting = asyncio.ensure_future(listener.accept(timeout=_WAIT * 3))
    await asyncio.sleep(0)
    listener.close()
    try:
        await asyncio.wait_for(accepting, _WAIT)
    except ChannelClosed:
        pass
    else:
        raise ConformanceError("accept() returned a channel after close()")
    try:
        ch = await aio.connect(where, timeout=2)
    except ConnectionRefused:
        pass
    else:
        await ch.aclose()
        raise ConformanceError(f"{where} still accepted connections after close()")

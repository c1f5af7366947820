"""The conformance suite, blocking API."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import ipcwire
from ipcwire.channel import Channel
from ipcwire.errors import (
    ChannelBroken,
    ChannelClosed,
    ConnectionRefused,
    EndOfChannel,
    FrameTooLarge,
    IpcwireError,
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

__all__ = ["check_channel", "pair_from_url"]

MakePair = Callable[..., AbstractContextManager[tuple[Channel, Channel]]]
_WAIT = 10.0  # generous bound for anything that must happen "promptly" on a busy machine


def pair_from_url(url: Callable[[], str]) -> MakePair:
    """A ``make_pair`` for listener mechanisms: listen at a fresh URL, connect, accept."""

    @contextlib.contextmanager
    def make(**options: Any) -> Iterator[tuple[Channel, Channel]]:
        with ipcwire.listen(url(), **options) as listener:
            box: list[Channel | BaseException] = []

            def accept() -> None:
                try:
                    box.append(listener.accept(timeout=_WAIT))
                except BaseException as exc:
                    box.append(exc)

            t = threading.Thread(target=accept)
            t.start()
            try:
                client = ipcwire.connect(listener.url, timeout=_WAIT, **options)
            finally:
                t.join()
            server = box[0]
            if isinstance(server, BaseException):
                client.close()
                raise server
            with client, server:
                yield client, server

    return make


def check_channel(
    make_pair: MakePair,
    capabilities: Capabilities,
    *,
    url: Callable[[], str] | None = None,
    codecs: tuple[str, ...] = ("bytes", "json", "msgpack", "pickle"),
) -> None:
    """Run every blocking check that ``capabilities`` allows.

    Raises:
        ConformanceError: naming the property that does not hold.
    """
    caps = capabilities
    if caps.max_message_size == 0:
        return  # carries no payload (signals): nothing here applies
    _codecs(make_pair, caps, codecs)
    if "bytes" in codecs:
        _bytes_like(make_pair, caps)
    if caps.reliable and caps.ordered:
        _ordering(make_pair, caps)
    if caps.message_boundaries:
        _empty_and_max(make_pair, caps)
    if caps.reliable and caps.message_boundaries:
        _concurrent_senders(make_pair, caps)
        _concurrent_receivers(make_pair, caps)
    _unsendable(make_pair, caps)
    _timeouts(make_pair, caps)
    _close_semantics(make_pair, caps)
    if caps.tells_failure and caps.bidirectional:
        _failure_told(make_pair)
    _close_wakes_receiver(make_pair)
    _statistics(make_pair, caps)
    if caps.bidirectional:
        _request(make_pair, caps)
    if url is not None and caps.multi_client:
        if caps.bidirectional:  # the check uses request()
            _concurrent_clients(url, caps)
        _listener_close(url)


def _options(codec: str) -> dict[str, Any]:
    return {"codec": codec, "token": TOKEN} if codec == "pickle" else {"codec": codec}


def _codecs(make_pair: MakePair, caps: Capabilities, codecs: tuple[str, ...]) -> None:
    limit = max_size_for(caps)
    for codec in codecs:
        samples = [s for s in SAMPLES[codec] if not isinstance(s, bytes) or len(s) < limit // 2]
        with make_pair(**_options(codec)) as (a, b):
            for msg in samples:
                a.send(msg, timeout=_WAIT)
                got = b.recv(timeout=_WAIT)
                expect(same(got, msg), f"codec {codec}: sent {msg!r:.60}, received {got!r:.60}")
                if caps.bidirectional:
                    b.send(got, timeout=_WAIT)
                    back = a.recv(timeout=_WAIT)
                    expect(
                        same(back, msg), f"codec {codec}: the reply direction changed {msg!r:.60}"
                    )


def _bytes_like(make_pair: MakePair, caps: Capabilities) -> None:
    """Any bytes-like object goes out as its bytes, alone and in send_many."""
    objs = bytes_likes()
    with make_pair(codec="bytes") as (a, b):
        for obj in objs:
            a.send(obj, timeout=_WAIT)
            got = b.recv(timeout=_WAIT)
            want = memoryview(obj).tobytes()
            expect(got == want, f"sent {type(obj).__name__} {want!r:.40}, received {got!r:.40}")
        if caps.reliable and caps.ordered:
            a.send_many(objs, timeout=_WAIT)
            got_many = _receive(b, len(objs), "send_many of bytes-like objects")
            want_many = [memoryview(o).tobytes() for o in objs]
            expect(got_many == want_many, f"send_many of bytes-like objects gave {got_many!r:.80}")


def _receive(b: Channel, n: int, what: str) -> list[Any]:
    """``n`` messages by recv_many; a ConformanceError saying how many came if they stop."""
    got: list[Any] = []
    while len(got) < n:
        try:
            got.extend(b.recv_many(timeout=_WAIT))
        except Timeout:
            raise ConformanceError(
                f"{what}: {len(got)} of {n} messages arrived, then nothing for {_WAIT} s "
                f"(messages lost)"
            ) from None
    return got


def _ordering(make_pair: MakePair, caps: Capabilities) -> None:
    n = 2000
    with make_pair(codec="msgpack") as (a, b):
        done = threading.Event()
        errors: list[BaseException] = []

        def produce() -> None:
            try:
                for i in range(0, n, 100):
                    a.send_many([[i + j, payload(16, i + j)] for j in range(100)], timeout=_WAIT)
            except BaseException as exc:
                errors.append(exc)
            finally:
                done.set()

        t = threading.Thread(target=produce)
        t.start()
        try:
            received = _receive(b, n, "ordering (send_many in batches of 100)")
        finally:
            t.join()
        expect(not errors, f"sending failed: {errors}")
        for i, msg in enumerate(received):
            expect(
                msg == [i, payload(16, i)], f"message {i} out of order or corrupted: {msg!r:.60}"
            )


def _concurrent_senders(make_pair: MakePair, caps: Capabilities) -> None:
    """Threads sending on one channel at once: each message arrives once and whole (their
    writes never interleave), each thread's in the order it sent them."""
    senders, sizes = 4, tagged_sizes(caps, 24)
    with make_pair(codec="bytes") as (a, b):
        errors: list[BaseException] = []

        def produce(k: int) -> None:
            try:
                for seq, size in enumerate(sizes):
                    a.send(tagged(k, seq, size), timeout=_WAIT)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=produce, args=(k,)) for k in range(senders)]
        for t in threads:
            t.start()
        try:
            got = _receive(b, senders * len(sizes), "threads sending at once")
        finally:
            for t in threads:
                t.join()
        expect(not errors, f"threads sending at once: {errors[:2]}")
        check_tagged(got, senders, sizes, ordered=caps.ordered)


def _concurrent_receivers(make_pair: MakePair, caps: Capabilities) -> None:
    """Threads receiving from one channel at once: between them, each message once and whole."""
    sizes = tagged_sizes(caps, 48)
    with make_pair(codec="bytes") as (a, b):
        got: list[Any] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        stop = threading.Event()  # set when sending failed: nothing more is coming

        def consume() -> None:
            deadline = time.monotonic() + _WAIT * 2
            while not stop.is_set() and time.monotonic() < deadline:
                with lock:
                    if len(got) >= len(sizes) or errors:
                        return
                try:
                    msg = b.recv(timeout=0.2)  # a turn: the other thread may take the last one
                except Timeout:
                    continue
                except BaseException as exc:
                    with lock:
                        errors.append(exc)
                    return
                with lock:
                    got.append(msg)

        threads = [threading.Thread(target=consume) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            for seq, size in enumerate(sizes):
                a.send(tagged(0, seq, size), timeout=_WAIT)
        except BaseException:
            stop.set()
            raise
        finally:
            for t in threads:
                t.join(_WAIT * 3)
        expect(not any(t.is_alive() for t in threads), "threads receiving at once hung")
        expect(not errors, f"threads receiving at once: {errors[:2]}")
        check_tagged(got, 1, sizes, ordered=False)


def _empty_and_max(make_pair: MakePair, caps: Capabilities) -> None:
    size = max_size_for(caps)
    with make_pair(codec="bytes", max_frame=size) as (a, b):
        a.send(b"", timeout=_WAIT)
        expect(b.recv(timeout=_WAIT) == b"", "a 0-byte message did not arrive as b''")
        big = payload(size, 7)
        box: list[Any] = []
        t = threading.Thread(target=lambda: box.append(b.recv(timeout=_WAIT)))
        t.start()  # the message is larger than the kernel buffers: receive while sending
        a.send(big, timeout=_WAIT)
        t.join(_WAIT)
        expect(bool(box), "a max-size message did not arrive")
        got = box[0]
        expect(got == big, f"a max-size message ({size} bytes) arrived altered ({len(got)} bytes)")
        try:
            a.send(payload(size + 1), timeout=_WAIT)
        except FrameTooLarge as exc:
            expect(exc.size == size + 1 and exc.limit == size, f"FrameTooLarge fields: {exc!r}")
        else:
            raise ConformanceError(f"sending {size + 1} bytes over max_frame={size} was accepted")
        a.send(b"after", timeout=_WAIT)
        got = b.recv(timeout=_WAIT)
        expect(got == b"after", f"after an oversized send the next message was {got!r:.60}")


def _unsendable(make_pair: MakePair, caps: Capabilities) -> None:
    """What the codec cannot encode is refused by send() with LocalProtocolError naming the
    endpoint, nothing of it is sent, and the channel goes on."""
    with make_pair(codec="json") as (a, b):
        for what, obj in unencodable():
            err: BaseException | None = None
            try:
                a.send(obj, timeout=_WAIT)
            except Exception as exc:  # (the check says what it was)
                err = exc
            expect_unsendable(err, what, a.url)
        if caps.reliable:
            a.send({"after": "refusals"}, timeout=_WAIT)
            got = b.recv(timeout=_WAIT)
            expect(got == {"after": "refusals"}, f"after the refusals, received {got!r:.60}")


def _timeouts(make_pair: MakePair, caps: Capabilities) -> None:
    with make_pair() as (a, b):
        try:
            b.recv_nowait()
        except Timeout:
            pass
        else:
            raise ConformanceError("recv_nowait() returned without a message")
        for wait in (0, 0.05):
            start = time.monotonic()
            try:
                b.recv(timeout=wait)
            except Timeout as exc:
                expect(isinstance(exc, TimeoutError), "Timeout must also be a TimeoutError")
            else:
                raise ConformanceError(f"recv(timeout={wait}) returned without a message")
            expect(time.monotonic() - start >= wait * 0.9, f"recv(timeout={wait}) returned early")
        a.send(b"still usable", timeout=_WAIT)
        expect(b.recv(timeout=_WAIT) == b"still usable", "the channel broke after a Timeout")


def _burst_then_close(a: Channel, b: Channel, burst: list[bytes], who: str) -> None:
    """A thread sends ``burst`` on ``a`` (half by ``send_many``) and closes it at once; ``b``
    receives every message whole and in order, then EndOfChannel."""
    errors: list[BaseException] = []

    def send_and_close() -> None:
        try:
            a.send_many(burst[:6], timeout=_WAIT)
            for m in burst[6:]:
                a.send(m, timeout=_WAIT)
            a.close()
        except BaseException as exc:
            errors.append(exc)

    sender = threading.Thread(target=send_and_close)
    sender.start()
    got: list[Any] = []
    try:
        while len(got) < len(burst):
            got.append(b.recv(timeout=_WAIT))
    except IpcwireError as exc:
        raise ConformanceError(
            f"{who}: {len(got)} of the {len(burst)} messages sent right before close() "
            f"arrived, then {type(exc).__name__}: {exc} (messages lost)"
        ) from exc
    finally:
        sender.join()
    expect(not errors, f"{who}: sending, then close(): {errors[:1]}")
    expect(got == burst, f"{who}: messages sent right before close() arrived changed")
    try:
        b.recv(timeout=_WAIT)
    except EndOfChannel:
        pass
    else:
        raise ConformanceError(f"{who}: recv after the peer closed did not raise EndOfChannel")


def _close_semantics(make_pair: MakePair, caps: Capabilities) -> None:
    checked = caps.reliable and caps.end_of_channel
    burst = close_burst(caps)
    with make_pair() as (a, b):
        if checked:
            _burst_then_close(a, b, burst, "client to server")
        else:
            a.send(b"last", timeout=_WAIT)
        a.close()
        a.close()  # idempotent
        expect(a.closed, "closed is False after close()")
        for op in (lambda: a.send(b"x"), lambda: a.recv(timeout=0)):
            try:
                op()
            except ChannelClosed:
                pass
            else:
                raise ConformanceError("using a closed channel did not raise ChannelClosed")
        if checked:
            expect(list(b) == [], "iteration did not end at EndOfChannel")
    if checked and caps.bidirectional:
        with make_pair() as (a, b):
            _burst_then_close(b, a, burst, "server to client")
        with make_pair() as (a, b):
            b.close()
            deadline = time.monotonic() + _WAIT
            while True:
                try:
                    a.send(payload(65536), timeout=_WAIT)
                except ChannelBroken:
                    break
                except EndOfChannel as exc:
                    raise ConformanceError(
                        "send raised EndOfChannel; it must be ChannelBroken"
                    ) from exc
                expect(time.monotonic() < deadline, "sending to a closed peer never failed")


def _failure_told(make_pair: MakePair) -> None:
    """A with block left by an exception is not a clean close (both directions)."""
    for direction in ("client to server", "server to client"):
        with make_pair() as pair:
            a, b = pair if direction == "client to server" else pair[::-1]
            try:
                with a:
                    a.send(b"before", timeout=_WAIT)
                    raise ProbeFailure
            except ProbeFailure:
                pass
            expect(same(b.recv(timeout=_WAIT), b"before"), f"{direction}: a message was lost")
            end: BaseException | None = None
            try:
                b.recv(timeout=_WAIT)
            except IpcwireError as exc:
                end = exc
            expect_failure_told(end, direction)


def _close_wakes_receiver(make_pair: MakePair) -> None:
    with make_pair() as (_a, b):
        started = threading.Event()
        result: list[BaseException | None] = []

        def receive() -> None:
            started.set()
            try:
                b.recv(timeout=_WAIT * 3)
                result.append(None)
            except BaseException as exc:
                result.append(exc)

        t = threading.Thread(target=receive)
        t.start()
        started.wait()
        b.close()
        t.join(_WAIT)
        expect(not t.is_alive(), "close() did not wake a thread blocked in recv()")
        expect(
            bool(result) and isinstance(result[0], ChannelClosed),
            f"a recv() interrupted by close() raised {result[0]!r}, not ChannelClosed",
        )


def _statistics(make_pair: MakePair, caps: Capabilities) -> None:
    with make_pair() as (a, b):
        for i in range(5):
            a.send(payload(10, i), timeout=_WAIT)
            if not caps.reliable:  # an unreliable mechanism may keep only the latest
                b.recv(timeout=_WAIT)
        for _ in range(5 if caps.reliable else 0):
            b.recv(timeout=_WAIT)
        expect_five_of_ten(a.statistics(), b.statistics())


def _request(make_pair: MakePair, caps: Capabilities) -> None:
    with make_pair(codec="json") as (a, b):

        def echo() -> None:
            for msg in b:
                b.send({"echo": msg})

        t = threading.Thread(target=echo, daemon=True)
        t.start()
        for i in range(20):
            reply = a.request({"n": i}, timeout=_WAIT)
            expect(reply == {"echo": {"n": i}}, f"request() got {reply!r}")
        if caps.reliable and caps.ordered:
            _concurrent_requests(a)
        a.close()
        if caps.reliable:  # an unreliable mechanism cannot tell the peer it closed
            t.join(_WAIT)
            expect(not t.is_alive(), "the echo loop did not end when the client closed")


def _concurrent_requests(a: Channel) -> None:
    """Threads calling request() on one channel at once: each gets the reply to its own
    request (the peer answers in order), never another thread's."""
    wrong: list[Any] = []

    def ask(k: int) -> None:
        try:
            for i in range(25):
                reply = a.request({"t": k, "n": i}, timeout=_WAIT)
                if reply != {"echo": {"t": k, "n": i}}:
                    wrong.append(({"t": k, "n": i}, reply))
        except BaseException as exc:
            wrong.append(exc)

    threads = [threading.Thread(target=ask, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expect(not wrong, f"threads calling request() at once got others' replies: {wrong[:2]}")


def _concurrent_clients(url: Callable[[], str], caps: Capabilities) -> None:
    clients, rounds = 8, 25
    with ipcwire.listen(url(), codec="json") as listener:

        def echo(ch: Channel) -> None:
            for msg in ch:
                ch.send(msg)

        server = threading.Thread(target=listener.serve, args=(echo,))
        server.start()
        errors: list[str] = []

        def client(k: int) -> None:
            try:
                with ipcwire.connect(listener.url, codec="json", timeout=_WAIT) as ch:
                    for i in range(rounds):
                        if ch.request([k, i], timeout=_WAIT) != [k, i]:
                            errors.append(f"client {k} got a wrong reply")
            except Exception as exc:
                errors.append(f"client {k}: {exc!r}")

        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(_WAIT * 3)
        listener.close()
        server.join(_WAIT)
        expect(not server.is_alive(), "serve() did not return after the listener closed")
        expect(not errors, f"concurrent clients: {errors[:3]}")


def _listener_close(url: Callable[[], str]) -> None:
    listener = ipcwire.listen(url())
    where = listener.url
    started = threading.Event()
    result: list[BaseException | None] = []

    def accept() -> None:
        started.set()
        try:
            listener.accept(timeout=_WAIT * 3)
            result.append(None)
        except BaseException as exc:
            result.append(exc)

    t = threading.Thread(target=accept)
    t.start()
    started.wait()
    listener.close()
    t.join(_WAIT)
    expect(not t.is_alive(), "close() did not wake a thread blocked in accept()")
    expect(isinstance(result[0], ChannelClosed), f"accept() after close raised {result[0]!r}")
    try:
        ipcwire.connect(where, timeout=2).close()
    except ConnectionRefused:
        pass
    else:
        raise ConformanceError(f"{where} still accepted connections after close()")

"""A closed blocking gRPC client lets go of its call and its channel once the RPC has ended,
not a minute later (the watchdog held the call for its 60 s linger: ~6 KiB per connection,
hundreds of MB for a service opening a thousand short connections a second)."""

from __future__ import annotations

import asyncio
import gc
import signal
import subprocess
import threading
import time
import weakref
from pathlib import Path

import pytest
from tests._proc import exited_within, python, wait_line

import ipcwire
from ipcwire import aio
from ipcwire.grpc import _watchdog


def _released(ref: weakref.ref[object], within: float) -> bool:
    """True once ``ref`` is dead (its object freed), checked after each collection."""
    deadline = time.monotonic() + within
    while True:
        gc.collect()
        if ref() is None:
            return True
        if time.monotonic() > deadline:
            return False
        threading.Event().wait(0.02)  # the watchdog thread closes the grpc channel


def test_a_closed_client_stream_releases_its_call_once_the_rpc_ended() -> None:
    with ipcwire.listen("grpc://127.0.0.1:0") as lst:
        box: list[ipcwire.Channel] = []
        t = threading.Thread(target=lambda: box.append(lst.accept(timeout=10)))
        t.start()
        client = ipcwire.connect(lst.url, timeout=10)
        t.join()
        with box[0] as server:
            client.send(b"ping", timeout=10)
            assert server.recv(timeout=10) == b"ping"
            call = client.call  # type: ignore[attr-defined]
            ended = threading.Event()
            call.add_done_callback(lambda _: ended.set())
            ref = weakref.ref(call)
            del call
            client.close()
            assert ended.wait(10), "the server never ended the closed client's RPC"
            del client
            assert _released(ref, 5.0), "the ended call is still held (by the watchdog's linger)"


def test_a_cancelled_watchdog_callback_is_let_go_at_once() -> None:
    class Held:
        def run(self) -> None:
            raise AssertionError("a cancelled callback ran")

    held = Held()
    ref = weakref.ref(held)
    token = _watchdog.after(3600, held.run)
    del held
    assert token.cancel()
    gc.collect()
    assert ref() is None, "a cancelled callback is kept (with all it refers to) until its deadline"


@pytest.mark.parametrize("ending", ["returns", "ctrl-c"])
@pytest.mark.parametrize("url", ["grpc://127.0.0.1:0", "grpc+unix"])
def test_a_program_with_a_stream_still_open_exits(ending: str, url: str, tmp_path: Path) -> None:
    """The listener's pool thread serving an open stream is not a daemon: the interpreter
    joined it at exit, forever (a program that returned with a stream open, or was stopped
    with Ctrl-C, never exited). Open listeners are closed before that join now."""
    if url == "grpc+unix":
        url = f"grpc+unix://{tmp_path}/g.sock"
    child = python(
        f"""
        import ipcwire, threading
        lst = ipcwire.listen({url!r})
        client = ipcwire.connect(lst.url, timeout=10)
        client.send(b"hello", timeout=10)
        server = lst.accept(timeout=10)
        assert server.recv(timeout=10) == b"hello"
        print("ready", flush=True)
        if {ending!r} == "ctrl-c":
            threading.Event().wait()
        """
    )
    try:
        assert wait_line(child) == "ready"
        if ending == "ctrl-c":
            child.send_signal(signal.SIGINT)
    finally:
        code = exited_within(child, 20)
    want = -signal.SIGINT if ending == "ctrl-c" else 0
    assert code == want, "the program did not exit (killed after 20 s)"


@pytest.mark.parametrize("loop", ["asyncio.run", "a loop closed by hand"])
def test_an_asyncio_listener_left_open_does_not_wedge_the_process(
    loop: str, tmp_path: Path
) -> None:
    """grpc.aio's Server.__del__ waits for ever once its event loop is gone (grpcio 1.85): a
    listener left open when asyncio.run() returned hung the process at its next garbage
    collection. Now asyncio.run()'s end (which cancels the tasks left) closes it inside its
    loop, and a server whose loop was closed by hand is never collected."""
    sock = tmp_path / "g.sock"
    child = python(
        f"""
        import asyncio, gc, os
        from ipcwire import aio

        async def main():
            lst = await aio.listen("grpc+unix://{sock}")
            client = await aio.connect(lst.url, timeout=10)
            await client.send(b"hello", timeout=10)
            server = await lst.accept(timeout=10)
            assert await server.recv(timeout=10) == b"hello"

        if {loop!r} == "asyncio.run":
            asyncio.run(main())
        else:
            lp = asyncio.new_event_loop()
            lp.run_until_complete(main())
            lp.close()
        gc.collect()
        print("collected", os.path.exists("{sock}"), flush=True)
        """
    )
    try:
        out, _ = child.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        raise AssertionError("the process hung in its garbage collection") from None
    # asyncio.run() closed the listener (its socket file is gone); by hand, nobody did
    want = "collected False" if loop == "asyncio.run" else "collected True"
    assert out.strip() == want


def test_a_client_that_closes_without_reading_the_replies_lets_go_at_once() -> None:
    """A blocking client that sent, then closed without reading the server's replies: gRPC
    delivers a call's status only after its messages, so the call never ended, and the
    client held it, its grpc channel and that channel's thread for the 60 s linger (a
    service whose clients came and went that way grew by a thread a connection; a server
    handler blocked in ``send`` by flow control was held as long). The closed client now
    reads and drops what still comes, as the asyncio client does."""
    ended: list[BaseException] = []
    done = threading.Event()

    def echo(ch: ipcwire.Channel) -> None:
        try:
            while True:
                ch.send(ch.recv(timeout=30), timeout=30)
        except ipcwire.IpcwireError as exc:
            ended.append(exc)
        finally:
            done.set()

    with ipcwire.listen("grpc://127.0.0.1:0") as lst:
        threading.Thread(target=lst.serve, args=(echo,), daemon=True).start()
        client = ipcwire.connect(lst.url, timeout=10)
        for _ in range(8):  # replies past gRPC's 64 KiB flow-control window
            client.send(b"x" * 100_000, timeout=10)
        call = client.call  # type: ignore[attr-defined]
        over = threading.Event()
        call.add_done_callback(lambda _: over.set())
        client.close()
        assert done.wait(20), "the server's handler is still blocked sending to a closed client"
        # (ChannelBroken when a send met the client's end of the stream)
        assert isinstance(ended[0], ipcwire.EndOfChannel | ipcwire.ChannelBroken), ended
        assert over.wait(10), "the closed client still holds its call (for the 60 s linger)"


def test_asyncio_aclose_waits_for_the_writes_at_most_aclose_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``await aclose()`` on a client whose server does not read waited the whole 60 s
    linger; now at most ACLOSE_WAIT, and the writing goes on meanwhile: the server, reading
    afterwards, gets every message, then the end."""
    from ipcwire.grpc import _aio

    monkeypatch.setattr(_aio, "ACLOSE_WAIT", 0.5)

    async def main() -> None:
        async with await aio.listen("grpc://127.0.0.1:0") as lst:
            accepting = asyncio.ensure_future(lst.accept(timeout=10))
            client = await aio.connect(lst.url, timeout=10)
            server = await accepting
            sent = 0
            while True:  # until the server's flow control holds the writes
                try:
                    await client.send(bytes([sent]) * 1_000_000, timeout=1)
                except ipcwire.Timeout:
                    break
                sent += 1
            await asyncio.wait_for(client.aclose(), 10)  # (it took 60 s)
            got = []
            with pytest.raises(ipcwire.EndOfChannel):
                while True:
                    got.append((await server.recv(timeout=10))[0])
            assert got == list(range(sent))
            await server.aclose()

    asyncio.run(main())

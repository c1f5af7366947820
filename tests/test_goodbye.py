"""A clean end is told from a crash on unix and tcp channels (docs/protocol.md section 5).

Real child processes end their side of a channel in each way a program ends: close(), the
end of a with block, the end of the script, an exception in a with block, an uncaught
exception, os._exit, kill -9. The other side, blocking or asyncio, must see EndOfChannel for
the first three and ChannelBroken (saying which) for the rest, after every message sent
before. The I/O-free parts (the decoder, the handshake) are checked byte by byte.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests._proc import python, wait_line

import ipcwire
import ipcwire.aio
from ipcwire._core.ending import end_error
from ipcwire._core.framing import (
    GOODBYE_MARK,
    LengthPrefixDecoder,
    goodbye_frame,
    readable_reason,
)
from ipcwire._core.handshake import ClientHandshake, ServerHandshake
from ipcwire._stream import linger

CLEAN = {
    "close": "ch.close()",
    "with": "with ch:\n    pass",
    "script end": "pass",
    # recv() woken by a close() from another thread (serve()'s shutdown) raises it
    "with ChannelClosed": "with ch:\n    raise ipcwire.errors.ChannelClosed('closed', endpoint='')",
    "with sys.exit()": "with ch:\n    raise SystemExit",  # a program finishing as it meant to
    "with sys.exit(0)": "with ch:\n    raise SystemExit(0)",
}
BROKEN = {
    "with raise": ("with ch:\n    raise ValueError('secret text')", "ValueError raised"),
    "with sys.exit(3)": ("with ch:\n    raise SystemExit(3)", "SystemExit raised"),
    "uncaught": ("raise KeyError('secret text')", "KeyError uncaught"),
    "os._exit": ("os._exit(0)", "went away without closing"),
    "kill -9": ("os.kill(os.getpid(), 9)", "went away without closing"),
}
ENDINGS = {**{k: (v, None) for k, v in CLEAN.items()}, **BROKEN}


def _child(url: str, ending: str) -> str:
    return (
        f"import os, ipcwire\nch = ipcwire.connect({url!r})\n"
        f"ch.send(b'first'); ch.send(b'second')\nprint('sent', flush=True)\n{ending}\n"
    )


@pytest.fixture(params=["unix", "tcp"])
def any_url(
    request: pytest.FixtureRequest, unix_url: Callable[[], str], tcp_url: Callable[[], str]
) -> str:
    return unix_url() if request.param == "unix" else tcp_url()


@pytest.mark.parametrize("how", list(ENDINGS))
def test_blocking_side_tells_how_the_peer_ended(any_url: str, how: str) -> None:
    code, broken = ENDINGS[how]
    with ipcwire.listen(any_url) as lst:
        proc = python(_child(lst.url, code))
        with lst.accept(timeout=20) as ch:
            assert wait_line(proc) == "sent"
            assert ch.recv(timeout=10) == b"first"
            assert ch.recv(timeout=10) == b"second"
            if broken is None:
                with pytest.raises(ipcwire.EndOfChannel):
                    ch.recv(timeout=10)
            else:
                with pytest.raises(ipcwire.ChannelBroken, match=broken) as info:
                    ch.recv(timeout=10)
                assert "secret text" not in str(info.value)  # only the type crosses
                with pytest.raises(ipcwire.ChannelBroken, match=broken):
                    ch.recv(timeout=10)  # and it stays so
        proc.communicate(timeout=20)


def test_an_interactive_session_ending_after_an_error_at_the_prompt_ends_cleanly(
    unix_url: Callable[[], str],
) -> None:
    """In ``python -i`` the last error at the prompt stays in sys.last_value; leaving the
    session afterwards is not a program failing, so the peer gets a clean end."""
    with ipcwire.listen(unix_url()) as lst:
        proc = subprocess.Popen(
            [sys.executable, "-i", "-q"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None
        proc.stdin.write(
            f"import ipcwire\nch = ipcwire.connect({lst.url!r})\nch.send(b'hi')\n"
            "raise KeyError('at the prompt')\n"
        )
        proc.stdin.flush()
        with lst.accept(timeout=20) as ch:
            assert ch.recv(timeout=10) == b"hi"
            _, err = proc.communicate("exit()\n", timeout=20)
            assert "KeyError" in err  # the error at the prompt happened
            with pytest.raises(ipcwire.EndOfChannel):
                ch.recv(timeout=10)


def test_the_goodbye_at_exit_leaves_a_blocked_reader_alone(unix_url: Callable[[], str]) -> None:
    """A program ending with a daemon thread blocked in recv(): the peer gets the clean
    goodbye, and the thread is not woken (with ChannelClosed, and perhaps a traceback) while
    the interpreter shuts down. The child's own exit handler, registered before ipcwire's,
    runs after it and looks."""
    with ipcwire.listen(unix_url()) as lst:
        proc = python(
            f"""
            import atexit, threading
            woke = threading.Event()
            atexit.register(lambda: print("woke" if woke.wait(1.0) else "blocked", flush=True))
            import ipcwire
            ch = ipcwire.connect({lst.url!r})

            def reader():
                try:
                    ch.recv()
                finally:
                    woke.set()

            threading.Thread(target=reader, daemon=True).start()
            ch.send(b"hi")
            """
        )
        with lst.accept(timeout=20) as ch:
            assert ch.recv(timeout=10) == b"hi"
            with pytest.raises(ipcwire.EndOfChannel):
                ch.recv(timeout=10)
            # (this side closes only once the child is gone: its goodbye would wake the
            # reader, rightly)
            out, err = proc.communicate(timeout=20)
        assert out.strip() == "blocked", (out, err)
        assert proc.returncode == 0 and err == ""


@pytest.mark.parametrize("how", ["close", "with raise", "kill -9"])
def test_asyncio_side_tells_how_the_peer_ended(any_url: str, how: str) -> None:
    code, broken = ENDINGS[how]

    async def main() -> None:
        async with await ipcwire.aio.listen(any_url) as lst:
            proc = python(_child(lst.url, code))
            async with await lst.accept(timeout=20) as ch:
                assert await ch.recv(timeout=10) == b"first"
                assert await ch.recv(timeout=10) == b"second"
                if broken is None:
                    with pytest.raises(ipcwire.EndOfChannel):
                        await ch.recv(timeout=10)
                else:
                    with pytest.raises(ipcwire.ChannelBroken, match=broken):
                        await ch.recv(timeout=10)
            await asyncio.to_thread(proc.communicate, timeout=20)

    asyncio.run(main())


def test_asyncio_peer_ends_by_exception(unix_url: Callable[[], str]) -> None:
    """An `async with` left by an exception says so; a clean one does not."""

    async def main() -> list[str]:
        seen: list[str] = []
        async with await ipcwire.aio.listen(unix_url()) as lst:
            for fail in (False, True):
                client = await ipcwire.aio.connect(lst.url)
                server = await lst.accept(timeout=10)
                with pytest.raises(RuntimeError) if fail else _nothing():
                    async with client:
                        await client.send(b"x")
                        if fail:
                            raise RuntimeError("boom")
                assert await server.recv(timeout=10) == b"x"
                try:
                    await server.recv(timeout=10)
                except ipcwire.IpcwireError as exc:
                    seen.append(f"{type(exc).__name__}: {exc}")
                await server.aclose()
        return seen

    clean, failed = asyncio.run(main())
    assert clean.startswith("EndOfChannel")
    assert failed.startswith("ChannelBroken") and "RuntimeError raised" in failed


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_serve_handler_that_raises_is_not_a_clean_end(unix_url: Callable[[], str]) -> None:
    def handler(ch: ipcwire.Channel) -> None:
        msg = ch.recv(timeout=10)
        ch.send(msg)
        if msg == b"fail":
            raise ZeroDivisionError("inner detail")

    with ipcwire.listen(unix_url()) as lst:
        t = threading.Thread(target=lst.serve, args=(handler,), daemon=True)
        t.start()
        for msg, want in ((b"ok", ipcwire.EndOfChannel), (b"fail", ipcwire.ChannelBroken)):
            with ipcwire.connect(lst.url) as ch:
                assert ch.request(msg, timeout=10) == msg
                with pytest.raises(want) as info:
                    ch.recv(timeout=10)
                if want is ipcwire.ChannelBroken:
                    assert "ZeroDivisionError raised" in str(info.value)
                    assert "inner detail" not in str(info.value)
        lst.close()
        t.join(10)


def test_asyncio_serve_handler_that_raises(tcp_url: Callable[[], str]) -> None:
    async def handler(ch: ipcwire.aio.AioChannel) -> None:
        msg = await ch.recv(timeout=10)
        await ch.send(msg)
        if msg == b"fail":
            raise LookupError("inner detail")

    async def main() -> None:
        async with await ipcwire.aio.listen(tcp_url()) as lst:
            task = asyncio.create_task(lst.serve(handler))
            for msg, want in ((b"ok", ipcwire.EndOfChannel), (b"fail", ipcwire.ChannelBroken)):
                async with await ipcwire.aio.connect(lst.url) as ch:
                    assert await ch.request(msg, timeout=10) == msg
                    with pytest.raises(want, match=r"LookupError raised|closed its end"):
                        await ch.recv(timeout=10)
            await lst.aclose()
            await task

    asyncio.run(main())


def test_goodbye_waits_behind_unread_messages(unix_url: Callable[[], str]) -> None:
    """A peer that has not read for a while: close() does not wait, and the goodbye still
    arrives after every message (it lingers until the peer makes room)."""
    with ipcwire.listen(unix_url()) as lst:
        client = ipcwire.connect(lst.url)
        server = lst.accept(timeout=10)
        sent = 0
        with pytest.raises(ipcwire.Timeout):
            while True:
                client.send(sent.to_bytes(4, "big") * 256, timeout=0.05)
                sent += 1
        assert sent > 10
        # the send that timed out wrote nothing (a socket with no room takes no part of it)
        client.close()  # no room for the goodbye either: it lingers
        assert linger.lingering() == 1
        for i in range(sent):
            assert server.recv(timeout=10) == i.to_bytes(4, "big") * 256
        with pytest.raises(ipcwire.EndOfChannel):
            server.recv(timeout=10)
        assert linger._lingerer.wait(10)
        server.close()


def test_a_forked_child_closing_its_copy_says_no_goodbye(unix_url: Callable[[], str]) -> None:
    with ipcwire.listen(unix_url()) as lst:
        client = ipcwire.connect(lst.url)
        server = lst.accept(timeout=10)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            client.close()
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert status == 0
        client.send(b"still open")
        assert server.recv(timeout=10) == b"still open"
        client.close()
        with pytest.raises(ipcwire.EndOfChannel):
            server.recv(timeout=10)
        server.close()


def test_a_peer_that_does_not_offer_goodbyes_ends_as_before(
    unix_url: Callable[[], str],
) -> None:
    """protocol.md version 1 without "goodbye" (another language's client): the end of the
    stream is a clean end, and the server sends it no goodbye frame."""
    with ipcwire.listen(unix_url()) as lst:
        path = lst.url.removeprefix("unix://")
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        hello = b'{"ipcwire":1,"codec":"bytes","framing":"length","max_frame":1024}'
        s.sendall(struct.pack(">I", len(hello)) + hello)
        server = lst.accept(timeout=10)
        (n,) = struct.unpack(">I", s.recv(4, socket.MSG_WAITALL))
        assert b"goodbye" not in s.recv(n, socket.MSG_WAITALL)
        s.sendall(struct.pack(">I", 2) + b"hi")
        s.close()
        assert server.recv(timeout=10) == b"hi"
        with pytest.raises(ipcwire.EndOfChannel):
            server.recv(timeout=10)
        server.close()


# -- the I/O-free parts ----------------------------------------------------------------------


@given(st.data())
def test_decoder_takes_a_goodbye_split_anywhere(data: st.DataObject) -> None:
    reason = data.draw(st.text(max_size=40))
    wire = struct.pack(">I", 3) + b"one" + goodbye_frame(reason) + struct.pack(">I", 3) + b"two"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    dec = LengthPrefixDecoder(1024)
    dec.goodbye = True
    frames = []
    for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        dec.feed(wire[a:b])
        while (f := dec.next_frame()) is not None:
            frames.append(bytes(f))
    assert frames == [b"one"]  # nothing after the goodbye is a message
    assert dec.ended == readable_reason(reason.encode())  # (control characters: ?)
    assert dec.buffered == 0


def test_decoder_without_goodbye_refuses_the_mark_as_before() -> None:
    dec = LengthPrefixDecoder(1024)
    dec.feed(goodbye_frame())
    with pytest.raises(ipcwire.FrameTooLarge):
        dec.next_frame()
    assert dec.ended is None


def test_decoder_bounds_the_reason() -> None:
    dec = LengthPrefixDecoder(1024)
    dec.goodbye = True
    dec.feed(struct.pack(">II", GOODBYE_MARK, 1 << 30) + b"x" * 100)
    assert dec.next_frame() is None
    assert dec.ended is not None and "reason" in dec.ended
    assert dec.buffered == 0
    # in the error, once in parentheses (it read "((a goodbye with a ...))": helper-113)
    err = str(end_error(dec, "unix:///x.sock"))
    assert f"(a goodbye with a {1 << 30}-byte reason, over 1024);" in err and "((" not in err


@pytest.mark.parametrize(
    ("client", "server", "agreed"),
    [(True, True, True), (True, False, False), (False, True, False)],
)
def test_handshake_agrees_on_goodbyes_only_when_both_offer(
    client: bool, server: bool, agreed: bool
) -> None:
    c = ClientHandshake(codec="bytes", framing="length", max_frame=64, token=None, goodbye=client)
    s = ServerHandshake(codec="bytes", framing="length", max_frame=64, token=None, goodbye=server)
    step = s.receive(c.hello()[4:])
    assert step.done
    assert c.receive(step.send[4:]).done
    assert c.goodbye is agreed and s.goodbye is agreed


def test_no_goodbyes_on_ndjson() -> None:
    c = ClientHandshake(codec="json", framing="ndjson", max_frame=64, token=b"t", goodbye=True)
    assert b"goodbye" not in c.hello()

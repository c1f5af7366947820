"""The clipboard against a real X server and xclip: what it does, and the toy it is."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests._loops import AioRun
from tests._proc import child, kill9, run_python, wait_line, wait_until

import ipcwire
from ipcwire import aio
from ipcwire.aio.channel import AioChannel
from ipcwire.channel import Channel
from ipcwire.clipboard import SPEC, probe
from ipcwire.clipboard.blocking import ClipboardChannel
from ipcwire.errors import (
    ChannelClosed,
    ConfigurationError,
    FrameTooLarge,
    LocalProtocolError,
    MechanismUnavailable,
    Timeout,
)
from ipcwire.testing import acheck_channel, check_channel

FAST: dict[str, Any] = {"poll_interval": 0.02}


@contextlib.contextmanager
def make_pair(**options: Any) -> Iterator[tuple[Channel, Channel]]:
    options.setdefault("text", False)
    with (
        ipcwire.connect("clipboard:", **FAST, **options) as a,
        ipcwire.connect("clipboard:", **FAST, **options) as b,
    ):
        yield a, b


@contextlib.asynccontextmanager
async def amake_pair(**options: Any) -> AsyncIterator[tuple[AioChannel, AioChannel]]:
    options.setdefault("text", False)
    async with (
        await aio.connect("clipboard:", **FAST, **options) as a,
        await aio.connect("clipboard:", **FAST, **options) as b,
    ):
        yield a, b


CODECS = ("bytes", "json", "msgpack")  # pickle needs a token; the clipboard cannot have one


def test_conformance(x_display: str) -> None:
    check_channel(make_pair, SPEC.capabilities, codecs=CODECS)


def test_asyncio_conformance(x_display: str, aio_run: AioRun) -> None:
    aio_run(acheck_channel(amake_pair, SPEC.capabilities, codecs=CODECS))


def test_statistics(x_display: str) -> None:
    with make_pair() as (a, b):
        for i in range(3):
            a.send(b"msg %d" % i)
            assert b.recv(timeout=5) == b"msg %d" % i
        assert a.statistics().messages_sent == 3 and b.statistics().messages_received == 3


def test_text_in_text_out(x_display: str) -> None:
    with ipcwire.connect("clipboard:", **FAST) as a, ipcwire.connect("clipboard:", **FAST) as b:
        assert isinstance(a, ClipboardChannel) and a.tool == f"xclip on {x_display}"
        a.send("naïve café ✓")
        assert b.recv(timeout=5) == "naïve café ✓"


def test_last_writer_wins_and_a_repeat_is_one_change(x_display: str) -> None:
    with ipcwire.connect("clipboard:", **FAST) as a, ipcwire.connect("clipboard:", **FAST) as b:
        a.send("first")
        a.send("second")  # overwrites "first" before b looked
        assert b.recv(timeout=5) == "second"
        a.send("second")  # the same text again: no change to see
        with pytest.raises(Timeout):
            b.recv(timeout=0.2)
        with pytest.raises(Timeout):
            a.recv(timeout=0.1)  # a channel never receives its own copy


def test_text_copied_by_another_program(x_display: str) -> None:
    with ipcwire.connect("clipboard:", **FAST) as b:
        subprocess.run(
            ["xclip", "-selection", "clipboard", "-i"],
            input=b"pasted by a human",
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert b.recv(timeout=5) == "pasted by a human"


def test_between_processes(x_display: str) -> None:
    with ipcwire.connect("clipboard:", codec="json", **FAST) as b:
        run_python(
            'import ipcwire\nwith ipcwire.connect("clipboard:", codec="json") as a:\n'
            '    a.send({"from": "another process"})\n'
        )
        assert b.recv(timeout=5) == {"from": "another process"}


def test_primary_selection_is_separate(x_display: str) -> None:
    with (
        ipcwire.connect("clipboard:?selection=primary", **FAST) as p,
        ipcwire.connect("clipboard:", **FAST) as c,
    ):
        p.send("primary only")
        with pytest.raises(Timeout):
            c.recv(timeout=0.1)


def test_asyncio_text(x_display: str) -> None:
    async def main() -> None:
        async with (
            await aio.connect("clipboard:", **FAST) as a,
            await aio.connect("clipboard:", **FAST) as b,
        ):
            waiting = asyncio.ensure_future(b.recv(timeout=5))
            await a.send("from asyncio")
            assert await waiting == "from asyncio"

    asyncio.run(main())


def test_refuses_a_token(x_display: str) -> None:
    with pytest.raises(ConfigurationError, match="cannot be authenticated"):
        ipcwire.connect("clipboard:", token="secret")


def test_no_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    reason = probe()
    assert reason is not None and "needs DISPLAY" in reason and "xclip" in reason
    with pytest.raises(MechanismUnavailable, match="apt install xclip"):
        ipcwire.connect("clipboard:")


def test_probe_finds_the_display(x_display: str) -> None:
    assert probe() is None


def test_platforms_finds_the_clipboard(x_display: str) -> None:
    import json
    import os
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "ipcwire", "platforms", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "DISPLAY": x_display},
    )
    rows = {m["scheme"]: m for m in json.loads(out.stdout)["mechanisms"]}
    assert rows["clipboard"]["available"] is True


def test_reply_selection_makes_a_two_way_channel(x_display: str) -> None:
    """With ``reply=primary`` the connecting side sends on CLIPBOARD and reads PRIMARY, the
    listening side the other way round: a request and its answer do not overwrite each other."""
    url = "clipboard:?reply=primary"
    with (
        ipcwire.listen(url, text=False, **FAST) as lst,
        lst.accept(timeout=5) as server,
        ipcwire.connect(url, text=False, **FAST) as client,
    ):
        for i in range(3):
            client.send(b"request %d" % i)
            assert server.recv(timeout=5) == b"request %d" % i
            server.send(b"answer %d" % i)
            assert client.recv(timeout=5) == b"answer %d" % i
        with pytest.raises(Timeout):
            server.recv(timeout=0.05)  # its own answer is not a request


def test_asyncio_reply_selection(x_display: str) -> None:
    async def main() -> None:
        url = "clipboard:?reply=primary"
        lst = await aio.listen(url, text=False, **FAST)
        async with (
            lst,
            await lst.accept(timeout=5) as server,
            await aio.connect(url, text=False, **FAST) as client,
        ):
            await client.send(b"ping")
            assert await server.recv(timeout=5) == b"ping"
            await server.send(b"pong")
            assert await client.recv(timeout=5) == b"pong"

    asyncio.run(main())


def test_reply_must_be_the_other_selection(x_display: str) -> None:
    with pytest.raises(ConfigurationError, match="must be the other selection"):
        ipcwire.connect("clipboard:?reply=clipboard")


def _xclip_copy(data: bytes) -> None:
    """Copy ``data`` as another program would (xclip serves it until the next copy)."""
    subprocess.run(
        ["xclip", "-selection", "clipboard", "-i"],
        input=data,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_content_over_max_frame_is_frame_too_large_and_skipped(x_display: str) -> None:
    """What another program copied was returned whatever its size: max_frame was checked
    only on send (both drivers)."""
    with ipcwire.connect("clipboard:", max_frame=100, **FAST) as b:
        _xclip_copy(b"y" * 1000)
        with pytest.raises(FrameTooLarge) as err:
            b.recv(timeout=5)
        assert (err.value.size, err.value.limit, err.value.endpoint) == (1000, 100, "clipboard:")
        _xclip_copy(b"small")
        assert b.recv(timeout=5) == "small"  # the large one was skipped

    async def main() -> None:
        async with await aio.connect("clipboard:", max_frame=100, **FAST) as b:
            _xclip_copy(b"z" * 1000)
            with pytest.raises(FrameTooLarge):
                await b.recv(timeout=5)
            _xclip_copy(b"fits")
            assert await b.recv(timeout=5) == "fits"

    asyncio.run(main())


def test_timeouts_are_honoured_when_the_display_does_not_answer(
    own_display: tuple[str, subprocess.Popen[bytes]],
) -> None:
    """A stopped (hung) X server: recv(timeout=0.3), send(timeout=0.3) and connect(timeout=0.3)
    waited for the tool's own 10 s limit and then raised ChannelBroken, in both drivers."""
    display, xvfb = own_display
    errors: list[Timeout] = []

    def attempts(ch: Any) -> list[Any]:
        return [lambda: ch.recv(timeout=0.3), lambda: ch.send("x", timeout=0.3)]

    with ipcwire.connect("clipboard:", display=display, **FAST) as ch:
        os.kill(xvfb.pid, signal.SIGSTOP)
        try:
            for attempt in attempts(ch):
                with pytest.raises(Timeout) as err:
                    attempt()
                errors.append(err.value)
            with pytest.raises(Timeout) as err:  # opening looks at the clipboard too
                ipcwire.connect("clipboard:", display=display, timeout=0.3)
            errors.append(err.value)
        finally:
            os.kill(xvfb.pid, signal.SIGCONT)

    async def main() -> None:
        async with await aio.connect("clipboard:", display=display, **FAST) as ch:
            os.kill(xvfb.pid, signal.SIGSTOP)
            try:
                for attempt in attempts(ch):
                    with pytest.raises(Timeout) as err:
                        await attempt()
                    errors.append(err.value)
                with pytest.raises(Timeout) as err:
                    await aio.connect("clipboard:", display=display, timeout=0.3)
                errors.append(err.value)
            finally:
                os.kill(xvfb.pid, signal.SIGCONT)

    asyncio.run(main())
    assert [e.endpoint for e in errors] == ["clipboard:"] * 6
    assert all("is the display answering?" in str(e) for e in errors)


def test_with_reply_what_was_there_before_is_not_a_message(x_display: str) -> None:
    """recv() returns the next change, not what was on the selection when the channel
    opened: with reply=, the blocking channel remembered the selection it sends on, not the
    one it receives on, and returned the stale content (the asyncio one did not)."""
    for selection in ("primary", "clipboard"):
        subprocess.run(
            ["xclip", "-selection", selection, "-i"],
            input=b"there before on " + selection.encode(),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    with ipcwire.connect("clipboard:?reply=primary", **FAST) as client, pytest.raises(Timeout):
        client.recv(timeout=0.2)

    async def main() -> None:
        async with await aio.connect("clipboard:?reply=primary", **FAST) as client:
            with pytest.raises(Timeout):
                await client.recv(timeout=0.2)

    asyncio.run(main())


def _running_tools(parent: int | None = None) -> list[int]:
    """The xclip children of ``parent`` (this process by default) still running (not
    exited)."""
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :]
        state, ppid = rest.split()[:2]
        if comm == "xclip" and int(ppid) == parent and state not in ("Z", "X"):
            found.append(int(entry))
    return found


def test_a_cancelled_asyncio_recv_or_send_leaves_no_tool_running(
    own_display: tuple[str, subprocess.Popen[bytes]],
) -> None:
    """Cancelling recv() or send() (wait_for, a task group) while the tool waited for a hung
    display left xclip running, stuck, until the loop closed its transport."""
    display, xvfb = own_display

    async def main() -> bool:
        async with await aio.connect("clipboard:", display=display, **FAST) as ch:
            os.kill(xvfb.pid, signal.SIGSTOP)
            try:
                for attempt in (ch.recv(), ch.send("x")):
                    with pytest.raises(TimeoutError):
                        await asyncio.wait_for(attempt, 0.3)
                return wait_until(lambda: not _running_tools())  # killed: exits at once
            finally:
                os.kill(xvfb.pid, signal.SIGCONT)

    none_left = asyncio.run(main())
    assert none_left, "xclip was left running"


def test_a_huge_timeout_is_no_limit(x_display: str) -> None:
    """recv(timeout=math.inf) raised OverflowError (the tool lock's wait)."""
    with ipcwire.connect("clipboard:", **FAST) as a, ipcwire.connect("clipboard:", **FAST) as b:
        a.send("inf", timeout=float("inf"))
        assert b.recv(timeout=float("inf")) == "inf"


@pytest.mark.parametrize("api", ["blocking", "asyncio"])
def test_a_sender_killed_mid_copy_leaves_no_part_of_its_message(x_display: str, api: str) -> None:
    """kill -9 of a sender while its copy tool read the message: the tool's stdin was a pipe,
    so it saw end-of-file at the part written so far and put that part on the clipboard, and
    the reader received a truncated message as if it were whole (64 KiB of 16 MiB)."""
    size, byte = 16 * 1024 * 1024, b"b" if api == "blocking" else b"a"  # each a change
    code = (
        "import sys, ipcwire\n"
        "with ipcwire.connect('clipboard:', text=False) as a:\n"
        "    print('ready', flush=True)\n"
        "    sys.stdin.readline()\n"
        f"    a.send({byte!r} * {size}, timeout=60)\n"
    )
    if api == "asyncio":
        code = (
            "import asyncio, sys, ipcwire.aio\n"
            "async def main():\n"
            "    async with await ipcwire.aio.connect('clipboard:', text=False) as a:\n"
            "        print('ready', flush=True)\n"
            "        sys.stdin.readline()\n"
            f"        await a.send({byte!r} * {size}, timeout=60)\n"
            "asyncio.run(main())\n"
        )
    with ipcwire.connect("clipboard:", text=False, **FAST) as b, child(code) as sender:
        assert wait_line(sender) == "ready"
        assert sender.stdin is not None
        sender.stdin.write("go\n")
        sender.stdin.flush()
        deadline = time.monotonic() + 20
        while not _running_tools(sender.pid):  # its xclip is reading the message: kill it now
            assert time.monotonic() < deadline, "the sender never started its copy tool"
        kill9(sender)
        got = b.recv(timeout=20)
        assert got == byte * size, f"a part of the message ({len(got)} of {size} bytes) arrived"


def _in_frame(thread: threading.Thread, name: str) -> bool:
    """Whether ``thread`` is running the function ``name`` (its innermost Python frame)."""
    assert thread.ident is not None
    frame = sys._current_frames().get(thread.ident)
    return frame is not None and frame.f_code.co_name == name


@pytest.mark.parametrize("api", ["blocking", "asyncio"])
def test_close_wakes_a_recv_waiting_for_a_tool_that_does_not_answer(
    own_display: tuple[str, subprocess.Popen[bytes]], api: str
) -> None:
    """close() from another thread while recv() waited for a paste from a hung display, or
    for the tool lock another channel's paste held: recv() went on waiting for the tool's
    own 10 s limit, then raised ChannelBroken (Closed wins, and at once)."""
    display, xvfb = own_display
    results: dict[str, BaseException] = {}

    def receive(ch: Channel, key: str) -> None:
        try:
            ch.recv()
        except BaseException as exc:
            results[key] = exc

    if api == "asyncio":
        asyncio.run(_close_wakes_a_recv_waiting_for_a_tool(display, xvfb))
        return
    with (
        ipcwire.connect("clipboard:", display=display, **FAST) as x,
        ipcwire.connect("clipboard:", display=display, **FAST) as y,
    ):
        os.kill(xvfb.pid, signal.SIGSTOP)
        try:
            tx = threading.Thread(target=receive, args=(x, "x"), daemon=True)
            tx.start()
            assert wait_until(lambda: bool(_running_tools()))  # x's paste waits for the display
            ty = threading.Thread(target=receive, args=(y, "y"), daemon=True)
            ty.start()
            assert wait_until(lambda: _in_frame(ty, "_locked"))  # y waits for the tool lock
            for ch, thread, key in ((y, ty, "y"), (x, tx, "x")):
                ch.close()
                thread.join(5)
                assert not thread.is_alive(), f"recv() on {key} went on after close()"
                assert isinstance(results[key], ChannelClosed), results[key]
        finally:
            os.kill(xvfb.pid, signal.SIGCONT)


async def _close_wakes_a_recv_waiting_for_a_tool(
    display: str, xvfb: subprocess.Popen[bytes]
) -> None:
    """The asyncio half of the test above: close() from another task."""
    async with (
        await aio.connect("clipboard:", display=display, **FAST) as x,
        await aio.connect("clipboard:", display=display, **FAST) as y,
    ):
        os.kill(xvfb.pid, signal.SIGSTOP)
        try:
            tx = asyncio.ensure_future(x.recv())
            deadline = time.monotonic() + 10
            while not _running_tools():  # x's paste waits for the display
                assert time.monotonic() < deadline, "x's paste never started"
                await asyncio.sleep(0.01)
            ty = asyncio.ensure_future(y.recv())
            for _ in range(5):  # turns of the loop, not time: y waits for the tool lock
                await asyncio.sleep(0)
            for ch, task in ((y, ty), (x, tx)):
                ch.close()
                with pytest.raises(ChannelClosed):
                    await asyncio.wait_for(task, 5)
        finally:
            os.kill(xvfb.pid, signal.SIGCONT)


def _bad_inputs() -> list[tuple[str, dict[str, Any], str]]:
    """(what, connect options, the call) that are refused with a typed error."""
    return [
        *[("poll_interval", {"poll_interval": v}, "") for v in (0, math.nan, math.inf, [1])],
        ("text", {"text": "maybe"}, ""),  # (was taken for text=True)
        ("recv timeout", {}, "recv"),
        ("send timeout", {}, "send"),
        ("lone surrogate", {}, "surrogate"),
    ]


@pytest.mark.parametrize(("what", "options", "call"), _bad_inputs())
@pytest.mark.parametrize("api", ["blocking", "asyncio"])
def test_bad_input_is_a_typed_error_naming_the_endpoint(
    x_display: str, api: str, what: str, options: dict[str, Any], call: str
) -> None:
    """poll_interval=0 (a keyword) was taken for 0.1, NaN polled without pause, infinity
    raised OverflowError in recv() and a list TypeError; recv(timeout="1") and
    send(timeout="1") raised TypeError; a str with a lone surrogate, in text mode,
    UnicodeEncodeError: none of them an IpcwireError naming the endpoint."""

    def attempt(ch: Any) -> Any:
        if call == "recv":
            return ch.recv(timeout="1")
        if call == "send":
            return ch.send("x", timeout="1")
        if call == "surrogate":
            return ch.send("\udc80")
        return None  # connect() refuses it

    async def aio_main() -> None:
        async with await aio.connect("clipboard:", **options) as ch:
            if (call_made := attempt(ch)) is not None:
                await call_made

    with pytest.raises((ConfigurationError, LocalProtocolError)) as err:
        if api == "blocking":
            with ipcwire.connect("clipboard:", **options) as ch:
                attempt(ch)
        else:
            asyncio.run(aio_main())
    assert "clipboard:" in str(err.value) and err.value.endpoint == "clipboard:", what

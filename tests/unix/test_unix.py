"""Unix sockets done right: modes, stale files, live owners, credentials, errors."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import socket
import stat
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests._loops import AioRun
from tests._proc import NOBODY, child, kill9, run_python, wait_line

import ipcwire
from ipcwire import aio
from ipcwire.errors import (
    AddressInUse,
    ChannelBroken,
    ConfigurationError,
    ConnectionRefused,
    EndOfChannel,
    InvalidURL,
    PermissionDenied,
    RemoteProtocolError,
    Timeout,
)

LISTEN_CHILD = """
import ipcwire, sys
lst = ipcwire.listen({url!r})
print("ready", flush=True)
ch = lst.accept()
print("accepted", flush=True)
sys.stdin.read()
"""


def _serve_one(listener: ipcwire.Listener) -> threading.Thread:
    def run() -> None:
        try:
            with listener.accept(timeout=10) as ch:
                for msg in ch:
                    ch.send(msg)
        except ipcwire.IpcwireError:
            pass

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_socket_file_is_0600_by_default_and_removed_on_close(sock_dir: Path) -> None:
    path = sock_dir / "a.sock"
    with ipcwire.listen(f"unix://{path}"):
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert sorted(os.listdir(sock_dir)) == ["a.sock"]  # no private bind directory left
    assert not path.exists()
    with ipcwire.listen(f"unix://{path}", mode=0o660):
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o660


def test_stale_socket_after_kill9_is_replaced(sock_dir: Path) -> None:
    url = f"unix://{sock_dir}/crash.sock"
    with child(LISTEN_CHILD.format(url=url)) as proc:
        assert wait_line(proc) == "ready"
        kill9(proc)
    assert (sock_dir / "crash.sock").exists()  # the crash left the file behind
    with ipcwire.listen(url) as lst, ipcwire.connect(url) as ch:  # no EADDRINUSE
        srv = _serve_one(lst)
        assert ch.request(b"alive", timeout=5) == b"alive"
    srv.join(5)


def test_a_live_listener_is_never_stolen_and_is_named(sock_dir: Path) -> None:
    url = f"unix://{sock_dir}/live.sock"
    with child(LISTEN_CHILD.format(url=url)) as proc:
        assert wait_line(proc) == "ready"
        with pytest.raises(AddressInUse) as info:
            ipcwire.listen(url)
        assert info.value.pid == proc.pid
        assert f"pid {proc.pid}" in str(info.value)
        with ipcwire.connect(url, timeout=10):  # the live listener still works
            assert wait_line(proc) == "accepted"


def test_a_socket_bound_by_a_live_process_that_does_not_listen_is_not_stale(
    sock_dir: Path,
) -> None:
    """The probe is refused there too, and listen() removed the file of a live process
    (between its bind() and listen(), or one that never listens). Found by helper-41."""
    path = sock_dir / "bound.sock"
    code = f"""
import socket
s = socket.socket(socket.AF_UNIX)
s.bind({str(path)!r})
print("ready", flush=True)
input()
"""
    with child(code) as proc:
        assert wait_line(proc) == "ready"
        with pytest.raises(AddressInUse, match="does not listen") as info:
            ipcwire.listen(f"unix://{path}")
        assert info.value.pid == proc.pid
        assert path.exists()
        kill9(proc)
    with ipcwire.listen(f"unix://{path}"):  # now it is stale, and replaced
        pass


def test_a_file_that_is_not_a_socket_is_never_removed(sock_dir: Path) -> None:
    path = sock_dir / "data.txt"
    path.write_text("precious")
    with pytest.raises(AddressInUse, match="not a socket"):
        ipcwire.listen(f"unix://{path}")
    assert path.read_text() == "precious"


def test_path_and_directory_errors(sock_dir: Path) -> None:
    with pytest.raises(InvalidURL, match="limit of 107"):
        ipcwire.listen("unix:///tmp/" + "x" * 120 + ".sock")
    name = f"ipcwire-{os.getpid()}-".ljust(107, "n")  # the longest abstract name Linux takes
    with ipcwire.listen(f"unix:@{name}") as listener, ipcwire.connect(listener.url, timeout=5):
        pass
    with pytest.raises(InvalidURL, match="1 to 107 bytes"):
        ipcwire.listen(f"unix:@{name}n")
    with pytest.raises(ConfigurationError, match="mkdir -p"):
        ipcwire.listen(f"unix://{sock_dir}/missing/dir/a.sock")
    with pytest.raises(InvalidURL, match="three slashes"):
        ipcwire.listen("unix://tmp/a.sock")


def test_connect_errors_say_what_to_do(sock_dir: Path) -> None:
    with pytest.raises(ConnectionRefused, match="does not exist"):
        ipcwire.connect(f"unix://{sock_dir}/nobody.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock_dir / "stale.sock"))
    stale.close()
    with pytest.raises(ConnectionRefused, match="stale"):
        ipcwire.connect(f"unix://{sock_dir}/stale.sock")


def test_eacces_names_mode_owner_and_fix(sock_dir: Path) -> None:
    os.chmod(sock_dir, 0o755)
    url = f"unix://{sock_dir}/private.sock"
    with ipcwire.listen(url):
        out = run_python(
            f"""
            import ipcwire
            try:
                ipcwire.connect({url!r}, timeout=5)
            except ipcwire.PermissionDenied as exc:
                print("PermissionDenied:", exc)
            """,
            as_nobody=True,
        )
    assert out.startswith("PermissionDenied:")
    assert "mode 0600 owned by uid 0" in out
    assert f"you are uid {NOBODY}" in out
    assert "mode=0o660" in out


def test_a_stale_socket_of_another_user_in_a_sticky_directory(sock_dir: Path) -> None:
    """listen() over another user's stale 0666 socket in a sticky directory (/tmp, say) said
    only "permission denied while listening on ... (Operation not permitted)": the probe
    found it stale, and the removal failed. It now says whose file it is and who may remove it
    (found by helper-83 working on doctor)."""
    os.chmod(sock_dir, 0o1777)
    path = sock_dir / "left.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
    os.chmod(path, 0o666)  # root's, stale (nothing listens), open to all
    out = run_python(
        f"""
        import ipcwire
        try:
            ipcwire.listen("unix://{path}")
        except ipcwire.PermissionDenied as exc:
            print("PermissionDenied:", exc)
        """,
        as_nobody=True,
    )
    assert out.startswith("PermissionDenied:"), out
    assert "stale socket" in out and "of uid 0" in out and f"rm {path}" in out
    assert path.exists()


def test_allow_uids_refuses_others_and_keeps_serving(sock_dir: Path) -> None:
    os.chmod(sock_dir, 0o755)
    url = f"unix://{sock_dir}/guarded.sock"
    with ipcwire.listen(url, mode=0o666, allow_uids=[os.getuid()]) as lst:
        stop = threading.Event()
        t = threading.Thread(target=lst.serve, args=(lambda ch: ch.send(ch.recv()),))
        t.start()
        out = run_python(
            f"""
            import ipcwire
            try:
                ipcwire.connect({url!r}, timeout=5)
            except ipcwire.PermissionDenied as exc:
                print("refused:", exc)
            """,
            as_nobody=True,
        )
        assert out.startswith("refused:")
        assert f"uid {NOBODY}" in out
        assert "allow_uids" in out
        with ipcwire.connect(url) as ch:  # the server still serves allowed clients
            assert ch.request(b"ok", timeout=5) == b"ok"
        lst.close()
        stop.set()
        t.join(10)


def test_abstract_names_only_admit_the_same_uid_by_default(abstract_url: Callable[[], str]) -> None:
    url = abstract_url()
    with ipcwire.listen(url) as lst:
        srv = _serve_one(lst)
        out = run_python(
            f"""
            import ipcwire
            try:
                ipcwire.connect({url!r}, timeout=5)
            except ipcwire.PermissionDenied:
                print("refused")
            """,
            as_nobody=True,
        )
        assert out == "refused"
        with ipcwire.connect(url) as ch:
            assert ch.request(b"me", timeout=5) == b"me"
    srv.join(5)


def test_peer_credentials_on_both_sides(unix_url: Callable[[], str]) -> None:
    with ipcwire.listen(unix_url()) as lst:
        box: list[ipcwire.Channel] = []
        t = threading.Thread(target=lambda: box.append(lst.accept(timeout=10)))
        t.start()
        with ipcwire.connect(lst.url) as ch:
            t.join()
            server_side = box[0]
            for info in (ch.peer, server_side.peer):
                assert info is not None
                assert (info.pid, info.uid, info.gid) == (os.getpid(), os.getuid(), os.getgid())
            server_side.close()


def test_server_killed_mid_conversation(sock_dir: Path) -> None:
    url = f"unix://{sock_dir}/dies.sock"
    with child(LISTEN_CHILD.format(url=url)) as proc:
        assert wait_line(proc) == "ready"
        ch = ipcwire.connect(url)
        assert wait_line(proc) == "accepted"
        kill9(proc)
        with pytest.raises((EndOfChannel, ChannelBroken)):
            ch.recv(timeout=10)
        ch.close()
    with ipcwire.listen(url):  # and the path is usable again at once
        pass


def test_reconnect_waits_for_a_server_that_starts_later(unix_url: Callable[[], str]) -> None:
    url = unix_url()
    result: list[object] = []

    def client() -> None:
        try:
            with ipcwire.connect(url, reconnect=20) as ch:
                result.append(ch.request(b"late", timeout=10))
        except Exception as exc:
            result.append(exc)

    t = threading.Thread(target=client)
    t.start()
    with ipcwire.listen(url) as lst:
        srv = _serve_one(lst)
        t.join(30)
    srv.join(5)
    assert result == [b"late"]


def _hello(codec: str = "json") -> bytes:
    """A client's hello (docs/protocol.md section 3), framed, as a raw socket sends it."""
    body = json.dumps(
        {"ipcwire": 1, "codec": codec, "framing": "length", "max_frame": 1 << 20}
    ).encode()
    return struct.pack(">I", len(body)) + body


def test_closing_an_asyncio_listener_cuts_off_clients_in_their_handshake(
    unix_url: Callable[[], str], aio_run: AioRun
) -> None:
    """A client that had connected but not finished its handshake when the listener closed
    was handshaken afterwards into a channel nobody could accept: it was told "connected",
    what it sent was lost, and the server's fd stayed open until the loop ended. It must be
    cut off, as the blocking listener does."""
    url = unix_url()
    path = url.removeprefix("unix://")

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        lst = await aio.listen(url, codec="json")
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.setblocking(False)
        try:
            await loop.sock_connect(raw, path)
            # A good client behind it: once that one is accepted (the kernel's queue is
            # FIFO), the loop has accepted the raw one too, which now waits in its handshake.
            async with await aio.connect(url, codec="json", timeout=5):
                (await lst.accept(timeout=5)).close()
            lst.close()
            try:
                await loop.sock_sendall(raw, _hello())
                async with asyncio.timeout(5):
                    return await loop.sock_recv(raw, 1000)
            except (BrokenPipeError, ConnectionResetError):
                return b""
        finally:
            raw.close()
            lst.close()

    assert aio_run(main()) == b""


def test_a_server_that_never_answers_the_handshake_times_out_in_timeout_seconds(
    sock_dir: Path,
) -> None:
    """connect(timeout=0.3) to a server that accepts but never answers gave up after 0.3 s
    but said "did not complete the handshake within 10.0 s" (the handshake_timeout option,
    not the time it had)."""
    path = sock_dir / "mute.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mute:
        mute.bind(str(path))
        mute.listen()  # connections complete in the backlog; nothing ever answers
        # (0.3 s less the connect's moment: what the handshake had)
        with pytest.raises(Timeout, match=r"within 0\.(3|29\d) s"):
            ipcwire.connect(f"unix://{path}", timeout=0.3)

        async def main() -> None:
            await aio.connect(f"unix://{path}", timeout=0.3)

        with pytest.raises(Timeout, match=r"within 0\.(3|29\d) s"):
            asyncio.run(main())


def test_asyncio_listener_holds_handshakes_beyond_backlog_until_accept(
    unix_url: Callable[[], str], aio_run: AioRun
) -> None:
    """backlog= is also how many handshaken clients may wait for accept() (docs), so a flood
    of clients nobody accepts costs bounded memory. The asyncio listener queued every one;
    now, as on the blocking listener, the clients beyond it wait in their handshake until
    accept() makes room."""
    url = unix_url()

    async def main() -> None:
        lst = await aio.listen(url, codec="json", backlog=1)
        try:
            first = await aio.connect(url, codec="json", timeout=5)  # fills the one place
            with pytest.raises(Timeout):
                await aio.connect(url, codec="json", timeout=0.3)  # held, then gives up
            waiting = asyncio.ensure_future(aio.connect(url, codec="json", timeout=5))
            a = await lst.accept(timeout=5)  # makes room for one more handshake
            # the one that gave up had sent its hello: its (dead) channel may come next
            accepted = [await lst.accept(timeout=5)]
            third = await waiting
            await first.send("one")
            assert await a.recv(timeout=5) == "one"
            await third.send("three")
            while True:
                try:
                    assert await accepted[-1].recv(timeout=5) == "three"
                    break
                except (EndOfChannel, ChannelBroken):
                    accepted.append(await lst.accept(timeout=5))
            assert len(accepted) <= 2
            for ch in (first, third, a, *accepted):
                await ch.aclose()
        finally:
            lst.close()

    aio_run(main())


def test_asyncio_server_answers_a_client_that_half_closed(
    unix_url: Callable[[], str], aio_run: AioRun
) -> None:
    """A client that sends its requests and then shuts down its sending side (nc -N, socat,
    any program at the end of its input) still reads the replies. The blocking server
    answered it; the asyncio one closed the connection at the client's end-of-stream, so
    every reply failed with ChannelBroken and the client got nothing."""
    url = unix_url()
    path = url.removeprefix("unix://")

    def client() -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(path)
            s.sendall(b'{"n": 1}\n{"n": 2}\n')
            s.shutdown(socket.SHUT_WR)
            out = b""
            while chunk := s.recv(4096):
                out += chunk
            return out

    async def main() -> bytes:
        lst = await aio.listen(url, framing="ndjson")
        try:
            replies = asyncio.ensure_future(asyncio.to_thread(client))
            ch = await lst.accept(timeout=5)
            got = [msg async for msg in ch]  # to the client's end-of-stream
            for msg in got:
                await ch.send({"echo": msg})
            await ch.aclose()
            async with asyncio.timeout(10):
                return await replies
        finally:
            lst.close()

    assert aio_run(main()) == b'{"echo":{"n":1}}\n{"echo":{"n":2}}\n'


def test_an_ndjson_client_refused_by_allow_uids_gets_permission_denied(
    unix_url: Callable[[], str], aio_run: AioRun
) -> None:
    """NDJSON without a token has no handshake, so a server refusing by allow_uids can only
    send its one error line. An ipcwire client then received that line as an ordinary
    message (a dict) instead of the PermissionDenied the docs promise; both drivers now
    raise it from the first receive."""
    other = os.getuid() + 1
    with ipcwire.listen(unix_url(), framing="ndjson", allow_uids=[other]) as lst:
        ch = ipcwire.connect(lst.url, framing="ndjson", timeout=5)
        with ch, pytest.raises(PermissionDenied, match="allow_uids"):
            ch.recv(timeout=5)

    async def main() -> None:
        alst = await aio.listen(unix_url(), framing="ndjson", allow_uids=[other])
        try:
            ch = await aio.connect(alst.url, framing="ndjson", timeout=5)
            try:
                with pytest.raises(PermissionDenied, match="allow_uids"):
                    await ch.recv(timeout=5)
            finally:
                await ch.aclose()
        finally:
            alst.close()

    aio_run(main())


def test_a_relative_socket_file_is_removed_even_after_a_chdir(
    sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """unix:relative.sock was removed on close relative to the working directory of the
    time of close(): after a chdir the socket file was left behind (the next listen then
    had to probe and remove it as stale)."""
    monkeypatch.chdir(sock_dir)
    lst = ipcwire.listen("unix:rel.sock")
    assert (sock_dir / "rel.sock").exists()
    monkeypatch.chdir("/")
    lst.close()
    assert not (sock_dir / "rel.sock").exists()


def test_asyncio_listener_holds_clients_without_a_handshake_beyond_backlog_unread(
    unix_url: Callable[[], str], aio_run: AioRun
) -> None:
    """NDJSON without a token has no handshake to hold, and the asyncio listener read and
    queued whatever such clients sent, however many already waited for accept(). Beyond
    backlog= they now wait unread (their sends back up, as behind the blocking listener's
    kernel backlog) until accept() makes room."""
    url = unix_url()
    path = url.removeprefix("unix://")
    line = b"x" * 2000 + b"\n"

    async def main() -> None:
        lst = await aio.listen(url, framing="ndjson", codec="bytes", backlog=1)
        first = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        second = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            first.connect(path)  # takes the one place
            second.connect(path)
            second.settimeout(0.3)
            with pytest.raises(TimeoutError):  # 2 MB, far more than the socket buffers hold
                await asyncio.to_thread(second.sendall, line * 1000)
            a = await lst.accept(timeout=5)  # makes room: the second one is let in
            b = await lst.accept(timeout=5)
            assert await b.recv(timeout=5) == line[:-1]
            for ch in (a, b):
                await ch.aclose()
        finally:
            first.close()
            second.close()
            lst.close()

    aio_run(main())


def test_out_of_fds_the_acceptor_pauses_instead_of_spinning(sock_dir: Path) -> None:
    """When accept() failed with EMFILE the client stayed in the backlog, the socket stayed
    readable, and the blocking listener's acceptor retried at once: a core at 100 % and
    tens of thousands of log lines a second. It now logs once, pauses accepting for a
    second (as asyncio does), and then takes the waiting clients once fds are free."""
    path = sock_dir / "emfile.sock"
    code = f"""
    import logging, resource, threading, ipcwire
    warned = threading.Event()
    warnings = []
    class Count(logging.Handler):
        def emit(self, record):
            warnings.append(record.getMessage())
            warned.set()
    logging.getLogger("ipcwire").addHandler(Count())
    logging.getLogger("ipcwire").setLevel(logging.WARNING)
    resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))
    lst = ipcwire.listen("unix://{path}", framing="ndjson")
    print("ready", flush=True)
    assert warned.wait(20), "the listener never ran out of fds"
    threading.Event().wait(0.5)  # a window in which a spinning acceptor logs thousands
    print(len(warnings), "out of file descriptors" in warnings[0], flush=True)
    taken = []
    while True:
        try:
            taken.append(lst.accept(timeout=0))
        except ipcwire.Timeout:
            break
    for ch in taken:
        ch.close()  # fds free again: the clients still waiting get in
    lst.accept(timeout=10).close()
    print("recovered", flush=True)
    lst.close()
    """
    with child(code) as proc:
        assert wait_line(proc) == "ready"
        clients = []
        try:
            for _ in range(60):  # more than the listener's 32 fds
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                clients.append(s)
                s.connect(str(path))
            count, named = wait_line(proc).split()
            assert named == "True" and int(count) < 10, count
            assert wait_line(proc) == "recovered"
        finally:
            for s in clients:
                s.close()


def test_two_listeners_starting_on_one_stale_path_never_both_win(
    sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both probe the stale file and find it dead; the second removes "the stale file" only
    after the first has bound there, so without the directory lock it removed the first's
    new socket and bound its own (the first stolen silently: it listened at a file that was
    no longer its own). With the lock, the second probes once the first has bound, finds it
    alive, and gets AddressInUse."""
    from ipcwire.unix import _socket

    path = sock_dir / "raced.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays: nothing listens there
    both_probed = threading.Barrier(2)
    first_done = threading.Event()
    order = itertools.count()
    real_probe = _socket._probe

    def probe_together(addr: Any) -> tuple[bool, int | None]:
        me = next(order)
        result = real_probe(addr)
        with contextlib.suppress(threading.BrokenBarrierError):
            both_probed.wait(timeout=0.5)  # with the lock the second cannot come: go on
        if me == 1:
            first_done.wait(10)
        return result

    monkeypatch.setattr(_socket, "_probe", probe_together)
    monkeypatch.setattr(_socket, "_LOCK_WAIT", 60.0)  # not its bound: the race is the point
    outcomes: list[object] = []

    def start() -> None:
        try:
            outcomes.append(ipcwire.listen(f"unix://{path}"))
        except AddressInUse as exc:
            outcomes.append(exc)
        finally:
            first_done.set()

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    listeners = [o for o in outcomes if isinstance(o, ipcwire.Listener)]
    try:
        assert len(listeners) == 1, outcomes
        assert isinstance(next(o for o in outcomes if o not in listeners), AddressInUse)
    finally:
        for lst in listeners:
            lst.close()


def test_a_listener_is_listening_before_the_next_one_may_probe_its_file(
    sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directory lock must cover listen() too: a socket bound and linked but not yet
    listening refuses connections, so a second listener that takes the lock in that moment
    probes the first's new file, finds it "stale", removes it and binds its own (the first
    stolen silently, as without the lock). Here the second listener starts exactly when the
    first releases the lock."""
    from ipcwire.unix import _socket

    path = sock_dir / "next.sock"
    real_lock = _socket._directory_lock
    second: list[object] = []

    @contextlib.contextmanager
    def lock_then_start_another(p: str | None) -> Any:
        with real_lock(p):
            yield
        if not second:  # the first listener, just out of the lock
            second.append(None)
            try:
                second[0] = ipcwire.listen(f"unix://{path}")
            except AddressInUse as exc:
                second[0] = exc

    monkeypatch.setattr(_socket, "_directory_lock", lock_then_start_another)
    first = ipcwire.listen(f"unix://{path}")
    try:
        assert isinstance(second[0], AddressInUse), second
        with ipcwire.connect(f"unix://{path}", timeout=5) as ch, first.accept(timeout=5) as srv:
            ch.send(b"to the first")
            assert srv.recv(timeout=5) == b"to the first"
    finally:
        first.close()
        if isinstance(second[0], ipcwire.Listener):
            second[0].close()


def test_a_server_answering_the_handshake_with_a_huge_frame_is_not_ipcwire_on_both_apis(
    tmp_path: Path, aio_run: AioRun
) -> None:
    """The two clients said it differently ("an oversized handshake frame (not ipcwire?)"
    on asyncio); both now say what the blocking one said, with the framing in use."""
    path = str(tmp_path / "foreign.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)

    def answer_twice() -> None:
        for _ in range(2):
            conn, _ = srv.accept()
            with conn:
                conn.sendall(struct.pack(">I", 0xF0000000))  # a length no handshake has
                conn.recv(1)  # until the client hangs up

    t = threading.Thread(target=answer_twice, daemon=True)
    t.start()
    want = "answered the handshake with something that is not ipcwire (framing='length')"
    with pytest.raises(RemoteProtocolError, match=re.escape(want)):
        ipcwire.connect(f"unix://{path}", timeout=10)

    async def main() -> None:
        with pytest.raises(RemoteProtocolError, match=re.escape(want)):
            await aio.connect(f"unix://{path}", timeout=10)

    aio_run(main())
    t.join(10)
    srv.close()

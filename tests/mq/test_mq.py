"""POSIX message queues against the real kernel: limits, modes, priorities, pieces, ownership,
peer death, and nothing left behind."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import posix_ipc
import pytest
from tests._codecs import FailsOnBad
from tests._proc import child, kill9, python, run_python, wait_line
from tests.mq.conftest import fresh_name

import ipcwire
from ipcwire import aio
from ipcwire.errors import (
    AddressInUse,
    ChannelBroken,
    ChannelClosed,
    ConfigurationError,
    ConnectionRefused,
    EndOfChannel,
    FrameTooLarge,
    InvalidURL,
    RemoteProtocolError,
    Timeout,
)
from ipcwire.mq import limits
from ipcwire.mq._proto import USER_PRIORITY_MAX, Hello, Reassembler, pieces
from ipcwire.mq.aio import AioMqChannel
from ipcwire.mq.blocking import MessageQueue, MqChannel, MqListener

PRELUDE = "import os, sys, ipcwire, ipcwire.mq.blocking, posix_ipc\nipcwire.mechanisms()\n"


def _pair(url: str, **kw: Any) -> tuple[MqListener, MqChannel, MqChannel]:
    listener = ipcwire.listen(url, **kw)
    assert isinstance(listener, MqListener)
    box: list[object] = []
    t = threading.Thread(target=lambda: box.append(listener.accept(timeout=10)))
    t.start()
    client = ipcwire.connect(url, timeout=10, **kw)
    t.join()
    server = box[0]
    assert isinstance(client, MqChannel) and isinstance(server, MqChannel)
    return listener, client, server


# -- the machine's limits --------------------------------------------------------------------
def test_limits_come_from_proc() -> None:
    lim = limits()
    proc = Path("/proc/sys/fs/mqueue")
    assert lim.msg_max == int((proc / "msg_max").read_text())
    assert lim.msgsize_max == int((proc / "msgsize_max").read_text())
    assert lim.msg_default == int((proc / "msg_default").read_text())


def test_too_many_messages_names_the_limit_and_the_kernel_agrees() -> None:
    lim = limits()
    over = lim.maxmsg_ceiling + 1
    name = fresh_name()
    with pytest.raises(ConfigurationError) as err:
        MessageQueue.create(name, maxmsg=over, msgsize=64)
    text = str(err.value)
    assert f"maxmsg={over}" in text
    assert "fs.mqueue.msg_max" in text and "sysctl -w fs.mqueue.msg_max" in text
    # the same request made raw is the opaque EINVAL the check replaces
    with pytest.raises(ValueError, match="Invalid parameter"):
        posix_ipc.MessageQueue(name, posix_ipc.O_CREX, max_messages=over, max_message_size=64)


def test_too_large_messages_names_the_limit_and_the_kernel_agrees() -> None:
    lim = limits()
    over = lim.msgsize_ceiling + 1
    name = fresh_name()
    with pytest.raises(ConfigurationError, match=r"fs\.mqueue\.msgsize_max"):
        MessageQueue.create(name, maxmsg=1, msgsize=over)
    with pytest.raises(ValueError, match="Invalid parameter"):
        posix_ipc.MessageQueue(name, posix_ipc.O_CREX, max_messages=1, max_message_size=over)


def test_options_in_the_url_are_checked_too(mq_url: Callable[..., str]) -> None:
    with pytest.raises(ConfigurationError, match=r"fs\.mqueue\.msg_max"):
        ipcwire.listen(mq_url(f"backlog={limits().maxmsg_ceiling + 1}"))
    with pytest.raises(ConfigurationError, match="must be an integer"):
        ipcwire.listen(mq_url("backlog=many"))


def test_exhausted_rlimit_says_ulimit_q(mq_url: Callable[..., str]) -> None:
    """The kernel reports an exhausted RLIMIT_MSGQUEUE as EMFILE ("too many open files");
    ipcwire says what it really is. In a child with a small limit, so nothing else suffers,
    running as a uid of its own: the limit counts every queue of the user, and root's or
    nobody's queues (other tests', in the other pytest worker too) would use it up."""
    url = mq_url("maxmsg=2")
    out = run_python(
        PRELUDE
        + f"""
import resource
resource.setrlimit(resource.RLIMIT_MSGQUEUE, (60_000, 60_000))
try:
    ipcwire.mq.blocking.MessageQueue.create("{fresh_name()}", maxmsg=10, msgsize=8192)
except ipcwire.ResourceExhausted as exc:  # (a limit; ConfigurationError before)
    print("ONE:", exc)
listener = ipcwire.listen("{url}")
channels = []
try:
    for _ in range(10):
        box = []
        import threading
        t = threading.Thread(target=lambda: box.append(listener.accept(timeout=10)))
        t.start()
        try:
            channels.append(ipcwire.connect("{url}", timeout=10))
        except ipcwire.ResourceExhausted:
            listener.close()  # wakes the accepting thread
            raise
        finally:
            t.join()
        channels.append(box[0])
except ipcwire.ResourceExhausted as exc:
    print("MANY:", exc)
for ch in channels:
    ch.close()
listener.close()
""",
        as_uid=64998,
    )
    one = next(line for line in out.splitlines() if line.startswith("ONE:"))
    assert "RLIMIT_MSGQUEUE" in one and "ulimit -q" in one
    many = next(line for line in out.splitlines() if line.startswith("MANY:"))
    assert "RLIMIT_MSGQUEUE" in many and "ulimit -q" in many and "maxmsg" in many


# -- permissions -----------------------------------------------------------------------------
def test_queues_are_0600_for_other_users(mq_url: Callable[..., str]) -> None:
    url = mq_url()
    with ipcwire.listen(url):
        proc = python(
            f"""
import ipcwire, ipcwire.mq.blocking, ipcwire.mq._queue, posix_ipc, os
ipcwire.mechanisms()
os.setgroups([]); os.setgid(65534); os.setuid(65534)
try:
    ipcwire.connect("{url}", timeout=5)
except ipcwire.PermissionDenied as exc:
    print("DENIED:", exc)
"""
        )
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "DENIED:" in out and "0600" in out and "mode=0o660" in out


def test_a_channels_queues_refuse_other_users() -> None:
    name = fresh_name()
    q = MessageQueue.create(name)
    try:
        out = run_python(
            f"""
import os, posix_ipc
from ipcwire.mq._queue import MessageQueue
from ipcwire.errors import PermissionDenied
os.setgroups([]); os.setgid(65534); os.setuid(65534)
try:
    MessageQueue.open("{name}")
except PermissionDenied as exc:
    print("DENIED")
"""
        )
        assert out == "DENIED"
    finally:
        q.unlink()
        q.close()


# -- messages --------------------------------------------------------------------------------
def test_priorities_overtake(mq_url: Callable[..., str]) -> None:
    listener, c, s = _pair(mq_url())
    with listener, c, s:
        c.send(b"low")
        c.send(b"urgent", priority=USER_PRIORITY_MAX)
        c.send(b"mid", priority=2)
        c.send(b"low2")
        got = [s.recv_with_priority(timeout=5) for _ in range(4)]
        assert got == [(b"urgent", USER_PRIORITY_MAX), (b"mid", 2), (b"low", 0), (b"low2", 0)]
        with pytest.raises(ConfigurationError, match="priority"):
            c.send(b"x", priority=USER_PRIORITY_MAX + 1)
        with pytest.raises(ConfigurationError, match="priority"):
            c.send(b"x", priority=-1)


def test_messages_larger_than_msgsize_travel_in_pieces(mq_url: Callable[..., str]) -> None:
    listener, c, s = _pair(mq_url("msgsize=1024"))
    with listener, c, s:
        big = os.urandom(300_000)
        exact = os.urandom(4 * 1024)  # a multiple of msgsize: ends with an empty piece
        got: list[bytes] = []
        t = threading.Thread(target=lambda: got.extend(s.recv(timeout=10) for _ in range(3)))
        t.start()
        c.send(big, timeout=10)
        c.send(exact, timeout=10)
        c.send(b"small", timeout=10)
        t.join(20)
        assert got == [big, exact, b"small"]


def test_the_peers_max_frame_limits_sends(mq_url: Callable[..., str]) -> None:
    listener, c, s = _pair(mq_url(), max_frame=10_000)
    with listener, c, s:
        with pytest.raises(FrameTooLarge) as err:
            c.send(b"x" * 10_001)
        assert err.value.limit == 10_000
        c.send(b"fits")
        assert s.recv(timeout=5) == b"fits"


def test_reassembler_skips_an_oversized_message_and_keeps_priorities_apart() -> None:
    r = Reassembler(msgsize=4, max_frame=10, url="mq:///t")
    assert r.feed(b"ab", 1) == b"ab"
    assert r.feed(b"aaaa", 1) is None
    assert r.feed(b"zz", 9) == b"zz"  # a higher priority overtakes a half-received message
    assert r.feed(b"aaaa", 1) is None
    with pytest.raises(FrameTooLarge):
        r.feed(b"aaaa", 1)  # 12 bytes > 10: dropped, the rest of it is skipped
    assert r.feed(b"aaaa", 1) is None
    assert r.feed(b"a", 1) is None  # its last piece
    assert r.feed(b"ok", 1) == b"ok"
    assert not r.partial
    assert [bytes(p) for p in pieces(b"12345678", 4)] == [b"1234", b"5678", b""]


# -- ownership and cleanup -------------------------------------------------------------------
def test_listener_unlinks_its_queue_and_unlink_false_keeps_it(mq_url: Callable[..., str]) -> None:
    url = mq_url()
    listener = ipcwire.listen(url)
    assert isinstance(listener, MqListener)
    name = listener.queue.name
    listener.close()
    with pytest.raises(ConnectionRefused, match="there is no queue"):
        MessageQueue.open(name)
    kept = ipcwire.listen(url, unlink=False)
    kept.close()
    MessageQueue.open(name).close()  # still there
    again = ipcwire.listen(url)  # adopts it
    again.close()
    with pytest.raises(ConnectionRefused):
        MessageQueue.open(name)


def test_a_second_listener_is_refused_with_the_owners_pid(mq_url: Callable[..., str]) -> None:
    url = mq_url()
    with ipcwire.listen(url):
        with pytest.raises(AddressInUse) as err:
            ipcwire.listen(url)
        assert err.value.pid == os.getpid()
        assert "this process already listens at" in str(err.value)  # (5fe084d)


def test_a_queue_ipcwire_did_not_create_is_left_alone(mq_url: Callable[..., str]) -> None:
    url = mq_url()
    name = url[len("mq://") :]
    q = posix_ipc.MessageQueue(name, posix_ipc.O_CREX)
    try:
        with pytest.raises(AddressInUse, match="no ipcwire listener created"):
            ipcwire.listen(url)
        q.send(b"still here")
    finally:
        q.unlink()
        q.close()


def test_listening_again_after_the_listener_was_killed(mq_url: Callable[..., str]) -> None:
    url = mq_url()
    with child(
        PRELUDE + f'listener = ipcwire.listen("{url}")\nprint("ready", flush=True)\n'
        "sys.stdin.read()\n"
    ) as proc:
        assert wait_line(proc) == "ready"
        with pytest.raises(AddressInUse, match=f"pid {proc.pid}"):
            ipcwire.listen(url)
        kill9(proc)
    listener, c, s = _pair(url)  # the leftover queue is adopted
    with listener, c, s:
        c.send(b"works")
        assert s.recv(timeout=5) == b"works"


def test_a_channels_queue_names_are_gone_once_it_is_open(mq_url: Callable[..., str]) -> None:
    listener, c, s = _pair(mq_url())
    with listener, c, s:
        for q in (c._in, c._out):
            with pytest.raises(ConnectionRefused):
                MessageQueue.open(q.name)


def test_a_client_killed_before_accept_leaves_nothing(mq_url: Callable[..., str]) -> None:
    url = mq_url("backlog=1")
    with ipcwire.listen(url) as listener:
        assert isinstance(listener, MqListener)
        # answered and not accepted, it fills the backlog: the listener leaves the
        # announcements in its queue until accept() makes room
        first = ipcwire.connect(url, timeout=10)
        proc = python(PRELUDE + f'ipcwire.connect("{url}", timeout=60)\n')
        try:
            # read the client's announcement (waiting for it), note its queues, put it back
            rendezvous = MessageQueue.open(listener.queue.name)
            data, prio = rendezvous.recv(timeout=20)
            hello = Hello.decode(data, url)
            rendezvous.send(data, priority=prio)
            rendezvous.close()
            kill9(proc)
            with first, listener.accept(timeout=5):
                pass  # room again: the listener takes the dead client's announcement
            with pytest.raises(Timeout):
                listener.accept(timeout=0.5)  # the dead client is dropped, not accepted
        finally:
            if proc.poll() is None:
                kill9(proc)
            proc.communicate()
    for name in (hello.up, hello.dn):
        with pytest.raises(ConnectionRefused):
            MessageQueue.open(name)


# -- peers that die --------------------------------------------------------------------------
def test_peer_killed_is_an_error_at_once_after_its_messages(mq_url: Callable[..., str]) -> None:
    url = mq_url()
    with (
        ipcwire.listen(url) as listener,
        child(
            PRELUDE
            + f"""
ch = ipcwire.connect("{url}", timeout=10)
for i in range(3):
    ch.send(b"m%d" % i)
print("sent", flush=True)
sys.stdin.read()
"""
        ) as proc,
    ):
        s = listener.accept(timeout=10)
        with s:
            assert s.peer is not None and s.peer.pid == proc.pid
            assert wait_line(proc) == "sent"
            kill9(proc)
            assert [s.recv(timeout=5) for _ in range(3)] == [b"m0", b"m1", b"m2"]
            start = time.monotonic()
            with pytest.raises(ChannelBroken, match=f"pid {proc.pid}"):
                s.recv(timeout=30)
            assert time.monotonic() - start < 10


def test_a_send_blocked_on_a_dead_peer_fails(mq_url: Callable[..., str]) -> None:
    url = mq_url("maxmsg=2")
    with (
        ipcwire.listen(url) as listener,
        child(
            PRELUDE + f'ch = ipcwire.connect("{url}", timeout=10)\nprint("in", flush=True)\n'
            "sys.stdin.read()\n"
        ) as proc,
    ):
        s = listener.accept(timeout=10)
        with s:
            assert wait_line(proc) == "in"
            s.send(b"1")
            s.send(b"2")  # the child's queue is full now
            with pytest.raises(Timeout, match="nothing was sent"):
                s.send(b"3", timeout=0.05)
            box: list[BaseException] = []

            def blocked() -> None:
                try:
                    s.send(b"3", timeout=30)
                except BaseException as exc:
                    box.append(exc)

            t = threading.Thread(target=blocked)
            t.start()
            kill9(proc)
            t.join(20)
            assert box and isinstance(box[0], ChannelBroken)


def test_cross_process_echo_and_clean_end(mq_url: Callable[..., str]) -> None:
    url = mq_url()
    with child(
        PRELUDE
        + f"""
with ipcwire.listen("{url}", codec="json") as listener:
    print("ready", flush=True)
    with listener.accept(timeout=10) as ch:
        for msg in ch:
            ch.send({{"echo": msg}})
    print("peer closed", flush=True)
"""
    ) as proc:
        assert wait_line(proc) == "ready"
        with ipcwire.connect(url, codec="json", timeout=10) as ch:
            assert ch.peer is not None and ch.peer.pid == proc.pid
            for i in range(50):
                assert ch.request([i], timeout=5) == {"echo": [i]}
        assert wait_line(proc) == "peer closed"
        assert proc.wait(timeout=20) == 0  # it closed its listener (and unlinked the queue)


def test_closed_and_end_of_channel(mq_url: Callable[..., str]) -> None:
    listener, c, s = _pair(mq_url())
    with listener, s:
        c.send(b"last")
        c.close()
        with pytest.raises(ChannelClosed):
            c.send(b"x")
        assert s.recv(timeout=5) == b"last"
        with pytest.raises(EndOfChannel):
            s.recv(timeout=5)
        with pytest.raises(ChannelBroken, match="closed its end"):
            s.send(b"nobody reads")


def test_nothing_is_listening(mq_url: Callable[..., str]) -> None:
    with pytest.raises(ConnectionRefused, match="reconnect=SECONDS"):
        ipcwire.connect(mq_url(), timeout=2)


def test_reconnect_waits_for_the_listener(mq_url: Callable[..., str]) -> None:
    url = mq_url()
    box: list[object] = []
    t = threading.Thread(target=lambda: box.append(ipcwire.connect(url, reconnect=20)))
    t.start()
    with ipcwire.listen(url) as listener:
        s = listener.accept(timeout=20)
        t.join(20)
        c = box[0]
        assert isinstance(c, MqChannel)
        with c, s:
            c.send(b"hi")
            assert s.recv(timeout=5) == b"hi"


# -- asyncio ---------------------------------------------------------------------------------
def test_asyncio_uses_the_descriptors_not_threads(mq_url: Callable[..., str]) -> None:
    url = mq_url()

    async def main() -> None:
        before = set(threading.enumerate())  # (a count would move as earlier tests' end)
        async with await aio.listen(url, codec="json") as listener:
            client = await aio.connect(url, codec="json")
            server = await listener.accept(timeout=5)
            assert isinstance(client, AioMqChannel) and isinstance(server, AioMqChannel)
            async with client, server:
                await client.send({"n": 1}, priority=3)
                assert await server.recv_with_priority(timeout=5) == ({"n": 1}, 3)
                big = "x" * 100_000
                task = asyncio.ensure_future(server.recv(timeout=10))
                await client.send(big, timeout=10)
                assert await task == big
                assert [t for t in threading.enumerate() if t not in before] == []

    asyncio.run(main())


# -- the queue on its own --------------------------------------------------------------------
def test_message_queue_as_a_work_queue() -> None:
    name = fresh_name()
    with MessageQueue.create(name, maxmsg=4, msgsize=128) as q:
        try:
            other = MessageQueue.open(name)
            q.send(b"a")
            q.send(b"b", priority=7)
            assert other.recv(timeout=1) == (b"b", 7)
            assert other.recv(timeout=1) == (b"a", 0)
            with pytest.raises(Timeout):
                other.recv(timeout=0.01)
            with pytest.raises(FrameTooLarge):
                q.send(b"x" * 129)
            other.close()
            with pytest.raises(ChannelClosed):
                other.recv(timeout=0)
        finally:
            q.unlink()
    with pytest.raises(InvalidURL, match="without '/'"):
        MessageQueue.open("/a/b")


# -- `ipcwire platforms` ----------------------------------------------------------------------
def test_platforms_reports_this_machines_limits() -> None:
    import json
    import resource
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "ipcwire", "platforms", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    data = json.loads(out.stdout)
    lim = data["limits"]
    assert lim["mqueue"] == limits().as_dict()
    r, w = os.pipe()
    try:
        import fcntl

        assert lim["pipe_buffer"]["default_bytes"] == fcntl.fcntl(w, 1032)  # F_GETPIPE_SZ
    finally:
        os.close(r)
        os.close(w)
    assert lim["pipe_buffer"]["max_bytes"] == int(Path("/proc/sys/fs/pipe-max-size").read_text())
    assert lim["open_files"]["soft"] == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    st = os.statvfs("/dev/shm")
    assert lim["dev_shm"]["size_bytes"] == st.f_blocks * st.f_frsize
    assert lim["unix_socket_path_max"] == 107
    rows = {m["scheme"]: m for m in data["mechanisms"]}
    assert rows["mq"]["available"] and "no XPC driver yet" in rows["xpc"]["reason"]
    human = subprocess.run(
        [sys.executable, "-m", "ipcwire", "platforms"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert "limits on this machine" in human.stdout and "RLIMIT_MSGQUEUE" in human.stdout


def test_a_message_that_does_not_decode_in_a_batch_loses_no_other(
    mq_url: Callable[..., str],
) -> None:
    """recv_many: a message after the first that does not decode used to raise out of the
    batch, losing the messages already taken. Now they come first, then its error, then
    the rest."""
    listener, client, server = _pair(mq_url(), codec=FailsOnBad())
    with listener, client, server:
        client.send_many([b"a", b"bad", b"c"])
        assert server.recv_many(timeout=5) == [b"a"]
        with pytest.raises(RemoteProtocolError):
            server.recv_many(timeout=5)
        assert server.recv_many(timeout=5) == [b"c"]

    async def main() -> None:
        url = mq_url()
        async with await aio.listen(url, codec=FailsOnBad()) as lst:
            accepting = asyncio.ensure_future(lst.accept(timeout=10))
            c = await aio.connect(url, codec=FailsOnBad(), timeout=10)
            s = await accepting
            async with c, s:
                await c.send_many([b"a", b"bad", b"c"])
                assert await s.recv_many(timeout=5) == [b"a"]
                with pytest.raises(RemoteProtocolError):
                    await s.recv(timeout=5)
                assert await s.recv_many(timeout=5) == [b"c"]

    asyncio.run(main())

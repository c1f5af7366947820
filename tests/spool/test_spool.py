"""The file spool against real files: exclusive claims, acks and releases, dead consumers,
leases, dead letters, FIFO per producer, half-written files, wake-ups, permissions."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest
from tests._proc import child, kill9, run_python, wait_line

import ipcwire
from ipcwire import aio
from ipcwire.errors import (
    ChannelClosed,
    ConfigurationError,
    FrameTooLarge,
    InvalidURL,
    RemoteProtocolError,
    Timeout,
)
from ipcwire.spool.aio import AioSpoolChannel
from ipcwire.spool.blocking import SpoolChannel, SpoolListener


def _open(url: str, **kw: object) -> SpoolChannel:
    ch = ipcwire.connect(url, **kw)  # type: ignore[arg-type]
    assert isinstance(ch, SpoolChannel)
    return ch


def test_layout_and_mode(spool_dir: Path) -> None:
    with _open(f"spool://{spool_dir}/q") as ch:
        ch.send(b"x")
        for sub in ("tmp", "new", "cur", "dead"):
            assert (spool_dir / "q" / sub).is_dir()
        assert (spool_dir / "q").stat().st_mode & 0o777 == 0o700
        assert ch.store.counts() == {"tmp": 0, "new": 1, "cur": 0, "dead": 0}


def test_other_users_are_refused(spool_dir: Path) -> None:
    url = f"spool://{spool_dir}/q"
    _open(url).close()
    os.chmod(spool_dir, 0o755)  # let nobody reach the spool's own 0700 directory
    out = run_python(
        f"""
import os, ipcwire, ipcwire.spool.blocking
ipcwire.mechanisms()
os.setgroups([]); os.setgid(65534); os.setuid(65534)
try:
    ipcwire.connect("{url}")
except ipcwire.PermissionDenied as exc:
    print(exc)
"""
    )
    assert "mode 0o700" in out and "uid 0" in out and "mode=0o770" in out


def test_each_message_is_claimed_by_one_consumer(spool_dir: Path) -> None:
    url = f"spool://{spool_dir}/q"
    n = 300
    with _open(url, codec="json") as producer:
        producer.send_many(list(range(n)))
    got: list[list[int]] = [[], [], []]

    def consume(k: int) -> None:
        with _open(url, codec="json") as ch:
            while True:
                try:
                    got[k].append(ch.recv(timeout=0.5))
                except Timeout:
                    return

    threads = [threading.Thread(target=consume, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    everything = sorted(m for part in got for m in part)
    assert everything == list(range(n))  # each once: none lost, none twice


def test_fifo_per_producer(spool_dir: Path) -> None:
    url = f"spool://{spool_dir}/q"
    with _open(url, codec="json") as p1, _open(url, codec="json") as p2:
        for i in range(50):
            p1.send(["a", i])
            p2.send_many([["b", i], ["b", i + 1000]])
    with _open(url, codec="json") as c:
        seen = [c.recv(timeout=5) for _ in range(150)]
    assert [i for who, i in seen if who == "a"] == list(range(50))
    b = [i for who, i in seen if who == "b"]
    assert b == [x for i in range(50) for x in (i, i + 1000)]


def test_recv_acknowledges_at_the_next_recv(spool_dir: Path) -> None:
    url = f"spool://{spool_dir}/q"
    with _open(url) as p:
        p.send_many([b"1", b"2"])
    c = _open(url)
    assert c.recv(timeout=5) == b"1"
    assert c.store.counts()["cur"] == 1  # claimed, not yet done with
    assert c.recv(timeout=5) == b"2"
    assert c.store.counts()["cur"] == 1  # "1" was acknowledged by asking for more
    c.close()
    assert c.store.counts() == {"tmp": 0, "new": 0, "cur": 0, "dead": 0}


def test_an_exception_in_the_with_block_redelivers(spool_dir: Path) -> None:
    url = f"spool://{spool_dir}/q"
    with _open(url) as p:
        p.send(b"job")
    with pytest.raises(RuntimeError), _open(url) as c:
        assert c.recv(timeout=5) == b"job"
        raise RuntimeError("processing failed")
    with _open(url) as c:
        d = c.claim(timeout=5)
        assert d.message == b"job" and d.attempt == 1
        d.ack()


def test_claim_ack_release_and_dead_letters(spool_dir: Path) -> None:
    url = f"spool://{spool_dir}/q"
    with _open(url, max_attempts=2) as c:
        c.send(b"poison")
        first = c.claim(timeout=5)
        assert first.attempt == 0
        first.release()
        second = c.claim(timeout=5)
        assert second.attempt == 1 and second.name.endswith(".1")
        second.release()  # attempt 2 = max_attempts: given up on
        with pytest.raises(Timeout):
            c.claim(timeout=0)
        assert c.store.counts()["dead"] == 1
        c.send(b"fine")
        d = c.claim(timeout=5)
        assert d.ack() and d.done


def test_a_killed_consumers_message_comes_back(spool_dir: Path) -> None:
    url = f"spool://{spool_dir}/q"
    with _open(url) as p:
        p.send_many([b"a", b"b"])
    with child(
        "import sys, ipcwire\n"
        f'ch = ipcwire.connect("{url}")\n'
        "print(ch.recv(timeout=10).decode(), flush=True)\n"
        "sys.stdin.read()\n"
    ) as proc:
        assert wait_line(proc) == "a"  # claimed and being "processed"...
        with _open(url, reap_interval=0.05) as c:
            assert c.recv(timeout=5) == b"b"
            with pytest.raises(Timeout):
                c.recv(timeout=0)  # "a" is held by a live consumer: not redelivered
            kill9(proc)
            d = c.claim(timeout=10)  # ...until that consumer dies
            assert d.message == b"a" and d.attempt == 1
            d.ack()


def test_a_lease_redelivers_from_a_stuck_consumer(spool_dir: Path) -> None:
    url = f"spool://{spool_dir}/q"
    with _open(url) as stuck, _open(url, lease=0.2, reap_interval=0.05) as other:
        stuck.send(b"slow job")
        held = stuck.claim(timeout=5)
        d = other.claim(timeout=10)  # after the lease, a copy goes back to the queue
        assert d.message == b"slow job" and d.attempt == 1
        assert held.ack() is False  # the stuck consumer learns it lost the claim
        assert d.ack() is True


def test_oversized_and_undecodable_messages_go_to_dead(spool_dir: Path) -> None:
    url = f"spool://{spool_dir}/q"
    with _open(url) as p:
        p.send(b"x" * 1000)
        p.send(b"not json")
        p.send(b'"fine"')
    with _open(url, codec="json", max_frame=500) as c:
        with pytest.raises(FrameTooLarge) as err:
            c.recv(timeout=5)
        assert err.value.size == 1000
        with pytest.raises(RemoteProtocolError):
            c.recv(timeout=5)
        assert c.recv(timeout=5) == "fine"
        assert c.store.counts()["dead"] == 2


def test_half_written_files_are_never_seen_and_get_cleaned(spool_dir: Path) -> None:
    url = f"spool://{spool_dir}/q"
    with _open(url, reap_interval=0.01) as c:
        stale = spool_dir / "q" / "tmp" / "00000000000000000001.dead-writer.0000000001.0"
        stale.write_bytes(b"half a mess")  # what a producer killed mid-write leaves
        old = time.time() - 3600
        os.utime(stale, (old, old))
        fresh = spool_dir / "q" / "tmp" / "00000000000000000002.live-writer.0000000001.0"
        fresh.write_bytes(b"being written")
        with pytest.raises(Timeout):
            c.recv(timeout=0.05)
        assert not stale.exists()  # reaped: its writer is gone (unlocked, an hour old)
        assert fresh.exists()  # too young to judge


def test_send_is_durable_and_visible_only_when_complete(spool_dir: Path) -> None:
    url = f"spool://{spool_dir}/q"
    with _open(url) as p:
        data = os.urandom(3_000_000)
        p.send(data)
        (name,) = os.listdir(spool_dir / "q" / "new")
        assert (spool_dir / "q" / "new" / name).read_bytes() == data
        assert os.listdir(spool_dir / "q" / "tmp") == []


@pytest.mark.parametrize("watch", ["inotify", "polling"])
def test_a_waiting_consumer_wakes_for_a_new_message(spool_dir: Path, watch: str) -> None:
    url = f"spool://{spool_dir}/q"
    with _open(url, watch=watch, poll_interval=0.02, reap_interval=30) as c:
        assert c.wakeups.startswith(watch)
        box: list[object] = []
        t = threading.Thread(target=lambda: box.append(c.recv(timeout=20)))
        t.start()
        with _open(url) as p:
            p.send(b"wake up")
        t.join(20)
        assert box == [b"wake up"]


def test_close_wakes_a_waiting_consumer_and_closed_means_closed(spool_dir: Path) -> None:
    with _open(f"spool://{spool_dir}/q") as c:
        box: list[BaseException] = []

        def wait() -> None:
            try:
                c.recv(timeout=30)
            except BaseException as exc:
                box.append(exc)

        t = threading.Thread(target=wait)
        t.start()
        c.close()
        t.join(10)
        assert box and isinstance(box[0], ChannelClosed)
        with pytest.raises(ChannelClosed):
            c.send(b"x")


def test_a_closed_producer_does_not_end_the_queue(spool_dir: Path) -> None:
    url = f"spool://{spool_dir}/q"
    p = _open(url)
    p.send(b"last")
    p.close()
    with _open(url) as c:
        assert c.recv(timeout=5) == b"last"
        with pytest.raises(Timeout):  # not EndOfChannel: other producers may come
            c.recv(timeout=0.05)


def test_listener_hands_out_its_one_channel(spool_dir: Path) -> None:
    url = f"spool://{spool_dir}/q"
    with ipcwire.listen(url, codec="json") as listener:
        assert isinstance(listener, SpoolListener)
        with _open(url, codec="json") as p:
            p.send({"to": "the listener"})
        ch = listener.accept(timeout=1)
        with ch:
            assert ch.recv(timeout=5) == {"to": "the listener"}
        with pytest.raises(Timeout):
            listener.accept(timeout=0.01)


def test_bad_options(spool_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match="watch="):
        ipcwire.connect(f"spool://{spool_dir}/q?watch=sometimes")
    with pytest.raises(ConfigurationError, match="lease="):
        ipcwire.connect(f"spool://{spool_dir}/q", lease=-1)
    with pytest.raises(ConfigurationError, match="unknown option"):
        ipcwire.connect(f"spool://{spool_dir}/q", colour="blue")
    with pytest.raises(InvalidURL):
        ipcwire.connect("spool://host/dir")


def test_asyncio_spool(spool_dir: Path) -> None:
    url = f"spool://{spool_dir}/q"

    async def main() -> None:
        async with await aio.connect(url, codec="json") as c:
            assert isinstance(c, AioSpoolChannel)
            waiting = asyncio.ensure_future(c.recv(timeout=20))
            async with await aio.connect(url, codec="json") as p:
                await p.send({"n": 1})
                await p.send_many([{"n": 2}, {"n": 3}])
            assert await waiting == {"n": 1}
            assert await c.recv_many(timeout=5) == [{"n": 2}, {"n": 3}]
            await p.send({"n": 4})  # p is closed
        raise AssertionError("unreachable")

    with pytest.raises(ChannelClosed):
        asyncio.run(main())

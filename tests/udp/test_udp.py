"""UDP: boundaries, size limits, truncation, modes, binding rules, loss accounting."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from typing import Any

import pytest
from tests._codecs import FailsOnBad, areceive_all
from tests._proc import wait_until

import ipcwire
from ipcwire import aio, udp
from ipcwire._core.url import parse_url
from ipcwire.errors import (
    AddressInUse,
    ConfigurationError,
    ConnectionRefused,
    FrameTooLarge,
    InvalidURL,
    LocalProtocolError,
    Timeout,
)
from ipcwire.udp import aio as udp_aio
from ipcwire.udp._channel import options_for


def test_listener_binds_loopback_by_default() -> None:
    with ipcwire.listen("udp://:0") as listener:
        assert listener.url.startswith("udp://127.0.0.1:")


def test_boundaries_are_kept_and_each_peer_gets_a_channel() -> None:
    with ipcwire.listen("udp://127.0.0.1:0") as server:
        a = ipcwire.connect(server.url)
        b = ipcwire.connect(server.url)
        a.send(b"one")
        a.send(b"two")
        b.send(b"")  # an empty datagram is a message too
        chans = {}
        for _ in range(2):
            ch = server.accept(timeout=5)
            assert ch.peer is not None
            chans[ch.peer.address] = ch
        ch_a = chans[f"udp://127.0.0.1:{a.local_address[1]}"]  # type: ignore[attr-defined]
        ch_b = chans[f"udp://127.0.0.1:{b.local_address[1]}"]  # type: ignore[attr-defined]
        assert [ch_a.recv(timeout=5), ch_a.recv(timeout=5)] == [b"one", b"two"]
        assert ch_b.recv(timeout=5) == b""
        ch_a.send(b"reply to a")
        assert a.recv(timeout=5) == b"reply to a"
        with pytest.raises(Timeout):
            b.recv(timeout=0.05)
        for ch in (a, b, ch_a, ch_b):
            ch.close()


def test_oversized_message_refused_before_sending() -> None:
    a, b = udp.pair()
    with a, b:
        with pytest.raises(FrameTooLarge) as info:
            a.send(b"x" * 65_508)
        assert (info.value.size, info.value.limit) == (65_508, 65_507)
        a.send(b"x" * 65_507)  # the largest datagram goes through whole
        assert b.recv(timeout=5) == b"x" * 65_507
        assert a.statistics().messages_sent == 1


def test_truncated_receive_is_detected() -> None:
    a, b = udp.pair()
    small = udp.bind("udp://127.0.0.1:0", max_frame=100)
    with a, b, small:
        a.send_to(b"y" * 1000, small.local_url)
        a.send_to(b"fits", small.local_url)
        with pytest.raises(FrameTooLarge) as info:
            small.recv(timeout=5)
        assert (info.value.size, info.value.limit) == (1000, 100)  # the real size, via MSG_TRUNC
        assert small.recv(timeout=5) == b"fits"  # and the channel goes on


def test_connected_mode_reports_nobody_listening() -> None:
    # The port's only socket is connected to itself, so it takes no datagram from anyone else:
    # the kernel refuses them (ICMP port unreachable) as for a port nothing has bound, and no
    # other process (the other pytest worker's) can bind the port, as it could a freed one.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.connect(s.getsockname())
        port = s.getsockname()[1]
        with ipcwire.connect(f"udp://127.0.0.1:{port}") as ch:
            ch.send(b"anyone?")
            with pytest.raises(ConnectionRefused, match="nothing listens"):
                ch.recv(timeout=5)
            with pytest.raises(Timeout):  # still usable
                ch.recv(timeout=0.05)


def test_unconnected_and_fire_and_forget() -> None:
    with udp.bind(codec="json") as inbox:
        udp.send_to(inbox.local_url, {"metric": 1}, codec="json")
        msg, addr = inbox.recv_from(timeout=5)
        assert msg == {"metric": 1}
        assert addr[0] == "127.0.0.1"
        with pytest.raises(LocalProtocolError, match="send_to"):
            inbox.send({"no": "peer"})
        inbox.send_to({"back": True}, addr)


def test_ndjson_datagrams_from_netcat_style_senders() -> None:
    with udp.bind(framing="ndjson") as inbox:
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        raw.sendto(b'{"a": 1}\n{"b": 2}\n{"c": 3}', inbox.local_address)  # three lines
        raw.close()
        got = [inbox.recv(timeout=5) for _ in range(3)]
        assert got == [{"a": 1}, {"b": 2}, {"c": 3}]


def test_between_processes() -> None:
    code = (
        "import sys, ipcwire\n"
        "with ipcwire.connect(sys.argv[1], codec='json') as ch:\n"
        "    print(ch.request({'ping': 1}, timeout=10), flush=True)\n"
    )
    with ipcwire.listen("udp://127.0.0.1:0", codec="json") as server:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, server.url], stdout=subprocess.PIPE, text=True
        )
        with server.accept(timeout=20) as peer:
            assert peer.recv(timeout=10) == {"ping": 1}
            peer.send({"pong": 1})
        out, _ = proc.communicate(timeout=20)
        assert out.strip() == "{'pong': 1}"


def test_binding_rules() -> None:
    with ipcwire.listen("udp://127.0.0.1:0") as first, pytest.raises(AddressInUse, match="in use"):
        ipcwire.listen(first.url)
    with pytest.raises(InvalidURL, match="no port"):
        ipcwire.connect("udp://127.0.0.1")
    with pytest.raises(InvalidURL, match="port 0"):
        ipcwire.connect("udp://127.0.0.1:0")
    with pytest.raises(ConfigurationError, match="token"):
        ipcwire.connect("udp://127.0.0.1:9", token="secret")


def test_kernel_drops_are_counted() -> None:
    # A receive buffer far too small for what is sent: the kernel drops, and says so.
    inbox = udp.bind()
    inbox._io.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    with inbox, ipcwire.connect(inbox.local_url) as ch:
        for _ in range(500):
            ch.send(b"z" * 1000)
        inbox.recv(timeout=5)
        stats = inbox.statistics()
        assert stats.dropped > 0
        assert stats.messages_received == 1


def test_asyncio_modes() -> None:
    async def main() -> None:
        async with await aio.listen("udp://127.0.0.1:0", codec="json") as server:
            client = await aio.connect(server.url, codec="json")
            await client.send({"n": 1})
            await client.send({"n": 2})
            peer = await server.accept(timeout=5)
            assert [await peer.recv(timeout=5), await peer.recv(timeout=5)] == [
                {"n": 1},
                {"n": 2},
            ]
            await peer.send({"ok": True})
            assert await client.recv(timeout=5) == {"ok": True}
            with pytest.raises(FrameTooLarge):
                await client.send("x" * 70_000)
            await client.send([])  # still usable
            assert await peer.recv(timeout=5) == []
            await peer.aclose()
            await client.aclose()

    asyncio.run(main())


def test_listener_channels_read_for_each_other_without_a_reader_thread() -> None:
    """Whichever caller waits reads the socket and sorts datagrams to every peer: two threads
    receiving on two peers' channels both get theirs, and no thread is left behind."""
    import threading

    before = set(threading.enumerate())  # (a count would move as earlier tests' threads end)
    with ipcwire.listen("udp://127.0.0.1:0") as server:
        a = ipcwire.connect(server.url)
        b = ipcwire.connect(server.url)
        a.send(b"hello a")
        ch_a = server.accept(timeout=5)
        b.send(b"hello b")
        ch_b = server.accept(timeout=5)
        assert [t for t in threading.enumerate() if t not in before] == []
        got: dict[str, list[bytes]] = {"a": [], "b": []}

        def receive(name: str, ch: object, n: int) -> None:
            for _ in range(n):
                got[name].append(ch.recv(timeout=10))  # type: ignore[attr-defined]

        threads = [
            threading.Thread(target=receive, args=("a", ch_a, 51)),
            threading.Thread(target=receive, args=("b", ch_b, 51)),
        ]
        for t in threads:
            t.start()
        for i in range(50):
            b.send(b"b%d" % i)
            a.send(b"a%d" % i)
        for t in threads:
            t.join(timeout=30)
            assert not t.is_alive()
        assert got["a"] == [b"hello a"] + [b"a%d" % i for i in range(50)]
        assert got["b"] == [b"hello b"] + [b"b%d" % i for i in range(50)]
        for ch in (a, b, ch_a, ch_b):
            ch.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_closing_wakes_a_waiting_recv_and_accept(host: str) -> None:
    """The reader waits in the kernel (a blocking receive); closing a channel wakes it with
    an empty datagram to the socket's own address (through loopback for 0.0.0.0), closing
    the listener with shutdown()."""
    import threading

    from ipcwire.errors import ChannelClosed

    with ipcwire.listen(f"udp://{host}:0") as server:
        a = ipcwire.connect(f"udp://127.0.0.1:{server.local_address[1]}")  # type: ignore[attr-defined]
        a.send(b"x")
        ch = server.accept(timeout=5)
        assert ch.recv(timeout=5) == b"x"
        errors: list[BaseException] = []

        def wait(call: object) -> None:
            try:
                call()  # type: ignore[operator]
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=wait, args=(ch.recv,))
        t.start()
        assert wait_until(lambda: server._reading)  # type: ignore[attr-defined]
        ch.close()  # the waiting recv reads the socket: closing must interrupt it
        t.join(timeout=10)
        assert not t.is_alive()
        t = threading.Thread(target=wait, args=(server.accept,))
        t.start()
        assert wait_until(lambda: server._reading)  # type: ignore[attr-defined]
        server.close()
        t.join(timeout=10)
        assert not t.is_alive()
        t = threading.Thread(target=wait, args=(a.recv,))  # a connected socket
        t.start()
        assert wait_until(a._io._rlock.locked)  # type: ignore[attr-defined]
        a.close()
        t.join(timeout=10)
        assert not t.is_alive()
        assert [type(e) for e in errors] == [ChannelClosed, ChannelClosed, ChannelClosed]


def test_zero_timeout_reads_what_is_waiting() -> None:
    """``recv(timeout=0)`` on a listener's channel reads a datagram already in the socket
    (loopback delivers during sendto) and times out only when there is none."""
    with ipcwire.listen("udp://127.0.0.1:0") as server, ipcwire.connect(server.url) as a:
        a.send(b"1")
        ch = server.accept(timeout=5)
        assert ch.recv(timeout=0) == b"1"
        with pytest.raises(Timeout):
            ch.recv(timeout=0)
        a.send(b"2")
        assert ch.recv(timeout=0) == b"2"
        ch.close()


def test_kernel_drops_at_a_listener_and_in_asyncio_are_counted() -> None:
    """A listener's socket (and an asyncio socket) whose receive buffer overflows: every
    datagram sent is either received or counted in the receiving channel's dropped."""
    with ipcwire.listen("udp://127.0.0.1:0") as server, ipcwire.connect(server.url) as ch:
        server._io.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # type: ignore[attr-defined]
        ch.send(b"first")
        with server.accept(timeout=5) as peer:
            for _ in range(500):
                ch.send(b"z" * 1000)
            while (st := peer.statistics()).messages_received + st.dropped < 501:
                peer.recv(timeout=5)
            assert st.dropped > 0

    async def main() -> None:
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        inbox = await udp_aio.bind()
        server = await udp_aio.listen(parse_url("udp://127.0.0.1:0"), options_for("udp:", {}))
        async with inbox, server:
            for sock in (inbox._sock, server._sock):
                assert sock is not None
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sender.sendto(b"first", server.local_address)
            peer = await server.accept(timeout=5)
            for _ in range(500):  # no await: the loop reads nothing meanwhile
                sender.sendto(b"z" * 1000, inbox.local_address)
                sender.sendto(b"z" * 1000, server.local_address)
            for ch, total in ((inbox, 500), (peer, 501)):
                while (st := ch.statistics()).messages_received + st.dropped < total:
                    await ch.recv(timeout=5)
                assert st.dropped > 0
            peer.close()
        sender.close()

    asyncio.run(main())


def test_ndjson_lines_up_to_max_frame_arrive_and_a_bad_line_loses_no_other() -> None:
    """With framing="ndjson" a message of max_frame bytes goes out as max_frame + 1 (its
    newline): the receiver with the same max_frame takes it. A datagram of three lines whose
    middle one is too long gives the first, FrameTooLarge in the middle one's place, and the
    last (blocking, a listener's peer, and asyncio)."""
    opts: dict[str, Any] = {"codec": "json", "framing": "ndjson", "max_frame": 20}
    three = b'"a"\n"' + b"x" * 30 + b'"\n"c"\n'
    with udp.bind(**opts) as inbox, ipcwire.connect(inbox.local_url, **opts) as ch:
        ch.send("x" * 18)  # 20 bytes of JSON
        assert inbox.recv(timeout=5) == "x" * 18
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with raw, ipcwire.listen("udp://127.0.0.1:0", **opts) as server:
            raw.sendto(three, inbox.local_address)
            raw.sendto(three, server.local_address)  # type: ignore[attr-defined]
            for c in (inbox, server.accept(timeout=5)):
                assert c.recv(timeout=5) == "a"
                with pytest.raises(FrameTooLarge):
                    c.recv(timeout=5)
                assert c.recv(timeout=5) == "c"
                if c is not inbox:
                    c.close()

    async def main() -> None:
        async with await udp_aio.bind(**opts) as inbox:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
                raw.sendto(b'"' + b"y" * 18 + b'"\n', inbox.local_address)
                raw.sendto(three, inbox.local_address)
                assert await inbox.recv(timeout=5) == "y" * 18
                assert await inbox.recv(timeout=5) == "a"
                with pytest.raises(FrameTooLarge):
                    await inbox.recv(timeout=5)
                assert await inbox.recv(timeout=5) == "c"

    asyncio.run(main())


def test_garbage_from_a_peer_nobody_reads_stays_bounded_and_counted() -> None:
    """A third party floods a listener with undecodable datagrams while the application
    serves another peer: its (unaccepted) channel keeps at most its queue's worth, errors
    included, counts the rest in dropped, and the served peer is not disturbed."""
    from ipcwire.udp.aio import QUEUE
    from ipcwire.udp.blocking import PEER_QUEUE

    with (
        ipcwire.listen("udp://127.0.0.1:0", codec="json") as server,
        ipcwire.connect(server.url, codec="json") as good,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as bad,
    ):
        good.send(0)
        served = server.accept(timeout=5)
        assert served.recv(timeout=5) == 0
        for i in range(1, 13):  # batches the socket's receive buffer holds whole
            for _ in range(100):
                bad.sendto(b"\xff not json", server.local_address)  # type: ignore[attr-defined]
            good.send(i)
            assert served.recv(timeout=5) == i  # read after the batch: all of it sorted
        with server.accept(timeout=5) as flooded:
            st = flooded.statistics()
            assert st.buffered_bytes == PEER_QUEUE * len(b"\xff not json")  # held as errors
            assert st.dropped == 1200 - PEER_QUEUE
        served.close()

    async def main() -> None:
        async with (
            await aio.listen("udp://127.0.0.1:0", codec="json") as server,
            await aio.connect(server.url, codec="json") as good,
        ):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as bad:
                await good.send(0)
                served = await server.accept(timeout=5)
                assert await served.recv(timeout=5) == 0
                for i in range(1, QUEUE // 100 + 3):
                    for _ in range(100):
                        bad.sendto(b"\xff not json", server.local_address)  # type: ignore[attr-defined]
                    await good.send(i)
                    assert await served.recv(timeout=5) == i
                flooded = await server.accept(timeout=5)
                assert len(flooded._q.items) == QUEUE  # type: ignore[attr-defined]
                assert flooded.statistics().buffered_bytes == QUEUE * len(b"\xff not json")
                assert flooded.statistics().dropped == (QUEUE // 100 + 2) * 100 - QUEUE
                flooded.close()
                served.close()

    asyncio.run(main())


def test_a_send_the_kernel_refuses_raises_with_both_apis() -> None:
    """After an ICMP port unreachable, Linux refuses the next send on a connected socket
    (ECONNREFUSED; that datagram is not sent). The blocking send raises ConnectionRefused;
    the asyncio send did not (transport.sendto hands the error to error_received) and
    counted the datagram as sent."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    url = f"udp://127.0.0.1:{s.getsockname()[1]}"
    s.close()  # nothing listens there

    with ipcwire.connect(url) as ch:
        sent = 0
        with pytest.raises(ConnectionRefused, match="nothing listens"):
            while sent < 100:
                ch.send(b"anyone?")
                sent += 1
        assert ch.statistics().messages_sent == sent > 0  # the refused one is not counted

    async def main() -> None:
        async with await aio.connect(url) as ch:
            sent = 0
            with pytest.raises(ConnectionRefused, match="nothing listens"):
                while sent < 100:
                    await ch.send(b"anyone?")
                    sent += 1
            assert ch.statistics().messages_sent == sent > 0
            await ch.send(b"")  # an empty datagram too, sent by hand
            with pytest.raises(ConnectionRefused):
                await ch.send(b"")

    asyncio.run(main())


def test_new_peers_over_the_accept_backlog_are_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """More new peers than accept() has taken (128 waiting): the datagrams of the others are
    dropped, counted in the listener's dropped, and logged once; served peers go on."""
    from ipcwire.udp._channel import ACCEPT_BACKLOG

    with (
        ipcwire.listen("udp://127.0.0.1:0") as server,
        ipcwire.connect(server.url) as good,
    ):
        good.send(b"0")
        served = server.accept(timeout=5)
        assert served.recv(timeout=5) == b"0"
        crowd = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(130)]
        try:
            for s in crowd:
                s.sendto(b"hello", server.local_address)  # type: ignore[attr-defined]
            good.send(b"1")
            assert served.recv(timeout=5) == b"1"  # read after the crowd: all of it sorted
            assert server.dropped == len(crowd) - ACCEPT_BACKLOG  # type: ignore[attr-defined]
            assert sum("waiting for accept()" in r.message for r in caplog.records) == 1
        finally:
            for s in crowd:
                s.close()
        served.close()


def test_accepted_peers_go_on_after_the_listener_closes() -> None:
    """ "Stop accepting; channels already accepted keep working until they close": the
    blocking peer channels raised ChannelClosed instead (the asyncio ones went on), also
    in a recv() waiting while the listener closed."""
    import threading

    server = ipcwire.listen("udp://127.0.0.1:0")
    with ipcwire.connect(server.url) as client:
        client.send(b"1")
        peer = server.accept(timeout=5)
        assert peer.recv(timeout=5) == b"1"
        got: list[object] = []
        t = threading.Thread(target=lambda: got.append(peer.recv(timeout=10)))
        t.start()
        assert wait_until(lambda: server._reading)  # type: ignore[attr-defined]
        server.close()  # wakes the waiting recv, which goes on waiting
        client.send(b"2")
        t.join(timeout=20)
        assert got == [b"2"]
        client.send(b"3")
        assert peer.recv(timeout=5) == b"3"
        peer.send(b"reply")
        assert client.recv(timeout=5) == b"reply"
        peer.close()


def test_connect_errors_are_typed() -> None:
    """bind= of the other address family, and a broadcast address (no SO_BROADCAST): a
    bare socket.gaierror and PermissionError before, typed errors naming the fix now."""
    from ipcwire.errors import PermissionDenied

    with pytest.raises(ConfigurationError, match="bind an address of the peer's family"):
        ipcwire.connect("udp://[::1]:9", bind="udp://127.0.0.1:0")
    with pytest.raises(ConfigurationError, match="bind an address of the peer's family"):
        ipcwire.connect("udp://127.0.0.1:9", bind="udp://[::1]:0")
    with pytest.raises(PermissionDenied, match="broadcast"):
        ipcwire.connect("udp://255.255.255.255:9")

    async def main() -> None:
        with pytest.raises(PermissionDenied, match="broadcast"):
            await aio.connect("udp://255.255.255.255:9")

    asyncio.run(main())


def test_a_datagram_the_codec_fails_on_disturbs_no_other_peer() -> None:
    """Three bytes from a third party, JSON that is not UTF-8: the JSON codec raises
    UnicodeDecodeError, which escaped from whichever caller was reading the listener's
    socket (another peer's recv(), or accept()), or from the asyncio loop's callback (the
    datagram lost with a logged traceback). It is that peer's RemoteProtocolError now."""
    from ipcwire.errors import RemoteProtocolError

    bad = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with (
        bad,
        ipcwire.listen("udp://127.0.0.1:0", codec="json") as server,
        ipcwire.connect(server.url, codec="json") as good,
    ):
        good.send(0)
        served = server.accept(timeout=5)
        assert served.recv(timeout=5) == 0
        bad.sendto(b'"\xb2"', server.local_address)  # type: ignore[attr-defined]
        good.send(1)
        assert served.recv(timeout=5) == 1  # the reader sorted the bad datagram on the way
        with server.accept(timeout=5) as third, pytest.raises(RemoteProtocolError, match="json"):
            third.recv(timeout=5)
        served.close()
        with udp.bind(codec="json") as inbox:
            bad.sendto(b'"\xb2"', inbox.local_address)
            with pytest.raises(RemoteProtocolError, match=inbox.local_url):
                inbox.recv(timeout=5)

    async def main() -> None:
        async with (
            await aio.listen("udp://127.0.0.1:0", codec="json") as server,
            await aio.connect(server.url, codec="json") as good,
        ):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as bad:
                await good.send(0)
                served = await server.accept(timeout=5)
                assert await served.recv(timeout=5) == 0
                bad.sendto(b'"\xb2"', server.local_address)  # type: ignore[attr-defined]
                await good.send(1)
                assert await served.recv(timeout=5) == 1
                third = await server.accept(timeout=5)
                with pytest.raises(RemoteProtocolError, match="json"):
                    await third.recv(timeout=5)
                third.close()
                served.close()

    asyncio.run(main())


def test_a_datagram_that_does_not_decode_in_a_batch_loses_no_other() -> None:
    """recv_many (the base classes' loop over recv) raised the error of a datagram that does
    not decode and lost the messages it had already taken. Now they come first, then the
    error (from the next recv_many), then the rest. Blocking and asyncio, both ends."""
    from ipcwire.errors import RemoteProtocolError

    def drain(ch: ipcwire.Channel) -> list[object]:
        got: list[object] = []
        while b"end" not in got:
            try:
                got.extend(ch.recv_many(timeout=5))
            except RemoteProtocolError:
                got.append("error")
        return got

    codec = FailsOnBad()
    with (
        ipcwire.listen("udp://127.0.0.1:0", codec=codec) as lst,
        ipcwire.connect(lst.url, codec=codec, timeout=5) as client,
    ):
        client.send(b"start")
        with lst.accept(timeout=5) as server:
            assert server.recv(timeout=5) == b"start"
            for m in (b"a", b"bad", b"c", b"end"):
                client.send(m)
            assert drain(server) == [b"a", "error", b"c", b"end"]
            for m in (b"a", b"bad", b"c", b"end"):
                server.send(m)
            assert drain(client) == [b"a", "error", b"c", b"end"]

    async def main() -> None:
        async with (
            await aio.listen("udp://127.0.0.1:0", codec=codec) as lst,
            await aio.connect(lst.url, codec=codec, timeout=5) as client,
        ):
            await client.send(b"start")
            async with await lst.accept(timeout=5) as server:
                assert await server.recv(timeout=5) == b"start"
                for m in (b"a", b"bad", b"c", b"end"):
                    await client.send(m)
                assert await areceive_all(server, timeout=5) == [b"a", "error", b"c", b"end"]

    asyncio.run(main())


def _datagrams(framing: str) -> tuple[list[bytes], list[int]]:
    """Datagrams to send, and the bytes delivered after each recv (an NDJSON datagram's
    bytes go with its last line)."""
    if framing == "ndjson":
        one, two = b'"a"\n"bb"\n', b'"ccc"\n'
        return [one, two], [0, len(one), len(one) + len(two)]
    return [b"x" * 10, b"y" * 20], [10, 30]


@pytest.mark.parametrize("framing", ["length", "ndjson"])
def test_buffered_bytes_counts_the_bytes_waiting_not_the_messages(framing: str) -> None:
    """statistics().buffered_bytes of a listener's peer was the number of queued messages (and
    0 on an asyncio connected channel with datagrams queued). It is the bytes received and not
    yet delivered: bytes_received minus what recv() returned; both drivers."""
    kw: dict[str, Any] = {"framing": "ndjson", "codec": "json"} if framing == "ndjson" else {}
    datagrams, gone = _datagrams(framing)
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def send_all(url: str) -> None:
        host, port = url.removeprefix("udp://").rsplit(":", 1)
        for d in datagrams:
            raw.sendto(d, (host, int(port)))

    try:
        with ipcwire.listen("udp://127.0.0.1:0", **kw) as lst:
            send_all(lst.url)
            with lst.accept(timeout=10) as ch:
                for n in gone:
                    ch.recv(timeout=10)
                    st = ch.statistics()
                    assert st.buffered_bytes == st.bytes_received - n, st
                assert ch.statistics().buffered_bytes == 0

        async def main() -> None:
            async with await aio.listen("udp://127.0.0.1:0", **kw) as lst:
                send_all(lst.url)
                async with await lst.accept(timeout=10) as ch:
                    for n in gone:
                        await ch.recv(timeout=10)
                        st = ch.statistics()
                        assert st.buffered_bytes == st.bytes_received - n, st
            # a connected channel queues what arrives too
            peer.bind(("127.0.0.1", 0))
            host, port = peer.getsockname()
            async with await aio.connect(f"udp://{host}:{port}", **kw) as client:
                await client.send("hello" if kw else b"hello")
                _, client_addr = peer.recvfrom(100)
                for d in datagrams:
                    peer.sendto(d, client_addr)
                for n in gone:
                    await client.recv(timeout=10)
                    st = client.statistics()
                    assert st.buffered_bytes == st.bytes_received - n, st

        asyncio.run(main())
    finally:
        raw.close()
        peer.close()

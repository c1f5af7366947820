"""Across fork: a child that closes its copies of its parent's listeners and channels leaves
the parent's alone.

After ``os.fork()`` the child holds copies of every descriptor. Closing them in the child
(an ``with`` block left, a prefork worker exiting normally) must not remove the parent's
socket file, FIFO or queue, shut down (``shutdown(2)``) a connection the parent still uses,
say goodbye to the parent's peer (or mark a shared-memory ring closed), or raise. It did:
the parent's listener lost its socket file (clients got "no socket at ..."), its
connections broke, and the SSE and HTTP listeners' close raised ``RuntimeError`` in the
child. Each case runs in a fresh interpreter, which forks.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from tests._proc import python, run_python

# A fork whose child closes its copies of client, server and lst, and must exit 0 (a hang
# there fails the test through SIGALRM; an exception, with what it raised).
FORK_AND_CLOSE = """pid = os.fork()
if pid == 0:
    signal.alarm(10)
    try:
        client.close()
        server.close()
        lst.close()
    except BaseException as exc:
        print("the child's close raised", repr(exc), flush=True)
        os._exit(1)
    os._exit(0)
_, status = os.waitpid(pid, 0)
assert status == 0, f"child status {status}"
"""

# What the parent does after its child closed everything and exited: one message from a new
# client to the listener (the listener's file, queue or socket is still there), and one each
# way on the channel that was open at the fork (it was not shut down).
FORK = """
import os, signal, sys, threading, ipcwire

url, both_ways, greet = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1"

def pair(lst):
    box = []

    def connect():
        ch = ipcwire.connect(lst.url, timeout=10)
        if greet:  # udp: a peer is accepted once its first datagram came
            ch.send(b"hello")
        box.append(ch)

    t = threading.Thread(target=connect)
    t.start()
    server = lst.accept(timeout=10)
    t.join(10)
    if greet:
        assert server.recv(timeout=10) == b"hello"
    return box[0], server

lst = ipcwire.listen(url)
client, server = pair(lst)
FORK_AND_CLOSE
client.send(b"after the fork")
assert server.recv(timeout=10) == b"after the fork"
if both_ways:
    server.send(b"back")
    assert client.recv(timeout=10) == b"back"
client.close()
server.close()
client, server = pair(lst)
client.send(b"new client")
assert server.recv(timeout=10) == b"new client"
client.close()
server.close()
lst.close()
print("ok")
""".replace("FORK_AND_CLOSE\n", FORK_AND_CLOSE)


def _url(kind: str, tmp_path: Path) -> tuple[str, bool]:
    name = f"ipcwt-{uuid.uuid4().hex[:10]}"
    return {
        "unix": (f"unix:{tmp_path}/s.sock", True),
        "tcp": ("tcp://127.0.0.1:0", True),
        "ws+unix": (f"ws+unix://{tmp_path}/w.sock", True),
        "fifo": (f"fifo://{tmp_path}/f.fifo", False),
        "mq": (f"mq://{name}", True),
        "shm": (f"shm://{name}", True),
        "ws": ("ws://127.0.0.1:0/x", True),
        "http+unix": (f"http+unix://{tmp_path}/h.sock", True),
        "grpc+unix": (f"grpc+unix://{tmp_path}/g.sock", True),
        "udp": ("udp://127.0.0.1:0", True),
    }[kind]


@pytest.mark.parametrize(
    "kind", ["unix", "tcp", "fifo", "mq", "shm", "ws", "ws+unix", "http+unix", "grpc+unix", "udp"]
)
def test_a_forked_child_closing_its_copies_leaves_the_parent_alone(
    kind: str, tmp_path: Path
) -> None:
    url, both_ways = _url(kind, tmp_path)
    out = run_python(
        FORK.replace("sys.argv[1]", repr(url))
        .replace("sys.argv[2]", repr("1" if both_ways else "0"))
        .replace("sys.argv[3]", repr("1" if kind == "udp" else "0"))
    )
    assert out.strip() == "ok", out
    assert list(tmp_path.iterdir()) == [], "the parent's close left files behind"


def test_a_child_forked_while_a_grpc_stream_is_open_does_not_run_grpcs_fork_handlers(
    tmp_path: Path,
) -> None:
    """With grpc's fork support on (grpcio's default here), a fork while an ipcwire grpc
    channel was open (its reader waits inside grpc) printed "Other threads are currently
    calling into gRPC, skipping fork() handlers" every time, and about one child in ten then
    died in grpc's fork handling (SIGSEGV or SIGABRT) though it never used grpc
    (test_a_forked_child_closing_its_copies_leaves_the_parent_alone[grpc+unix] failed so).
    ipcwire's grpc driver now loads grpc with GRPC_ENABLE_FORK_SUPPORT=false unless the
    program set it; a program's own choice is kept."""
    url = f"grpc+unix://{tmp_path}/g.sock"
    code = (
        FORK.replace("sys.argv[1]", repr(url))
        .replace("sys.argv[2]", repr("1"))
        .replace("sys.argv[3]", repr("0"))
    )
    proc = python(code)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.strip() == "ok"
    assert "skipping fork() handlers" not in err, err
    kept = python(
        "import os\n"
        "os.environ['GRPC_ENABLE_FORK_SUPPORT'] = 'true'\n"
        f"import ipcwire\nipcwire.listen({url!r}).close()\n"
        "print(os.environ['GRPC_ENABLE_FORK_SUPPORT'])\n"
    )
    out, err = kept.communicate(timeout=30)
    assert kept.returncode == 0, err
    assert out.strip() == "true"


SSE = """
import os, signal, ipcwire

lst = ipcwire.listen("sse+http://127.0.0.1:0/events")
client = ipcwire.connect(lst.url, timeout=10)
server = lst.accept(timeout=10)
FORK_AND_CLOSE
server.send(b"after the fork")
assert client.recv(timeout=10) == b"after the fork"
other = ipcwire.connect(lst.url, timeout=10)
lst.accept(timeout=10).send(b"new client")
assert other.recv(timeout=10) == b"new client"
lst.close()
print("ok")
""".replace("FORK_AND_CLOSE\n", FORK_AND_CLOSE)


def test_a_forked_child_closing_an_sse_listener_neither_raises_nor_stops_the_parent() -> None:
    assert run_python(SSE).strip() == "ok"


LOCK = """
import json, os, sys
from ipcwire.spool._flock import FileLock

path = sys.argv[1]
lock = FileLock(path).acquire(timeout=5)
pid = os.fork()
if pid == 0:
    lock.release()  # the child's copy
    os._exit(0)
os.waitpid(pid, 0)
other = FileLock(path)
try:
    other.acquire(timeout=0)
    print("the lock was free")
except Exception:
    pass
print(json.load(open(path))["pid"] == os.getpid())
"""


def test_a_forked_child_releasing_a_file_lock_keeps_the_parents(tmp_path: Path) -> None:
    """The lock and its note (who holds it, for doctor and error messages) stay the parent's;
    the child's release truncated the note."""
    path = str(tmp_path / "l.lock")
    out = run_python(LOCK.replace("sys.argv[1]", repr(path)))
    assert out.split() == ["True"], out


SPAWN = """
import os, signal, sys, ipcwire

ECHO = "import ipcwire\\nch = ipcwire.stdio()\\nfor m in ch: ch.send(m)"
child = ipcwire.spawn([sys.executable, "-c", ECHO])
child.send({"n": 1})
assert child.recv(timeout=10) == {"n": 1}
pid = os.fork()
if pid == 0:
    signal.alarm(10)
    child.close()  # the copy: no ladder for the parent's child
    os._exit(0)
_, status = os.waitpid(pid, 0)
assert status == 0, status
child.send({"n": 2})
assert child.recv(timeout=10) == {"n": 2}
child.close()
assert child.returncode == 0, child.returncode
print("ok")
"""


def test_a_forked_child_closing_a_spawn_channel_leaves_the_parents_child_running() -> None:
    assert run_python(SPAWN).strip() == "ok"


SPAWN_CLOSING = """
import os, signal, sys, threading, time, ipcwire

STAYS = "import ipcwire, time\\nch = ipcwire.stdio()\\nch.send('up')\\ntime.sleep(30)"
child = ipcwire.spawn([sys.executable, "-c", STAYS], exit_timeout=0.5)
assert child.recv(timeout=10) == "up"
closing = threading.Thread(target=child.close)  # waits exit_timeout, then SIGTERM
closing.start()
while not child._close_lock.locked():
    time.sleep(0.001)
pid = os.fork()
if pid == 0:
    signal.alarm(10)  # a hang in the child fails the test
    child.close()
    os._exit(0)
_, status = os.waitpid(pid, 0)
assert status == 0, f"child status {status} (14: SIGALRM, its close() hung)"
closing.join(10)
assert child.returncode == -signal.SIGTERM, child.returncode
print("ok")
"""


def test_a_forked_child_closes_a_spawn_channel_its_parent_was_closing() -> None:
    """A parent thread in close() at the fork held the channel's close lock, which no
    thread of the child would ever release: the child's close() of its copy hung."""
    assert run_python(SPAWN_CLOSING).strip() == "ok"


MQ_WAITING = """
import os, select, signal, sys, threading, time, ipcwire

lst = ipcwire.listen(sys.argv[1])
box = []
t = threading.Thread(target=lambda: box.append(ipcwire.connect(lst.url, timeout=10)))
t.start()
server = lst.accept(timeout=10)
t.join(10)
client = box[0]
got, accepted = [], []
receiver = threading.Thread(target=lambda: got.append(server.recv(timeout=20)))
acceptor = threading.Thread(target=lambda: accepted.append(lst.accept(timeout=20)))
receiver.start()
acceptor.start()
while not (server._recv_lock.locked() and lst._accept_lock.locked()):
    time.sleep(0.001)  # both threads are in their waits
pid = os.fork()
if pid == 0:
    signal.alarm(10)  # a hang in the child fails the test
    client.close()
    server.close()
    lst.close()
    os._exit(0)
_, status = os.waitpid(pid, 0)
assert status == 0, f"child status {status} (14: SIGALRM, a close() hung)"
woken = select.select([server._wake, lst._wake], [], [], 0)[0]
assert not woken, "the child's close signalled the parent's wake-up eventfd (a busy loop)"
client.send(b"after the fork")
receiver.join(10)
assert got == [b"after the fork"], got
other = ipcwire.connect(lst.url, timeout=10)
acceptor.join(10)
accepted[0].send(b"new client")
assert other.recv(timeout=10) == b"new client"
for ch in (other, accepted[0], client, server, lst):
    ch.close()
print("ok")
"""


def test_a_forked_child_closing_mq_copies_leaves_the_parents_waiting_threads_alone() -> None:
    """With a parent thread in recv() and one in accept() at the fork, the child's close of
    its copies sent the end-of-channel marker to the parent's peer (the parent's recv() got
    EndOfChannel), signalled the parent's wake-up eventfd (its waits then spun: nobody reads
    it), and hung on the accept lock the parent's thread held."""
    url = f"mq://ipcwt-{uuid.uuid4().hex[:10]}"
    assert run_python(MQ_WAITING.replace("sys.argv[1]", repr(url))).strip() == "ok"


SPOOL_WAITING = """
import os, signal, sys, threading, time, ipcwire

lst = ipcwire.listen(sys.argv[1])
consumer = lst.accept(timeout=10)
producer = ipcwire.connect(lst.url, timeout=10)
got = []


def receive():
    try:
        got.append(consumer.recv(timeout=20))
    except Exception as exc:
        got.append(exc)


receiver = threading.Thread(target=receive)
receiver.start()
while not consumer._recv_lock.locked():
    time.sleep(0.001)  # the thread is in its wait
pid = os.fork()
if pid == 0:
    signal.alarm(10)  # a hang in the child fails the test
    consumer.close()
    producer.close()
    lst.close()
    os._exit(0)
_, status = os.waitpid(pid, 0)
assert status == 0, f"child status {status} (14: SIGALRM, a close() hung)"
producer.send(b"after the fork")
receiver.join(10)
assert got == [b"after the fork"], got
for ch in (producer, consumer, lst):
    ch.close()
print("ok")
"""


def test_a_forked_child_closing_a_spool_consumer_leaves_the_parents_recv_alone(
    tmp_path: Path,
) -> None:
    """The child's close of its copy woke the parent's waiting recv() through the shared
    eventfd, which then raised ChannelClosed (the parent had closed nothing), and hung on
    the receive lock that thread held; it would also have settled (acked or released) the
    parent's deliveries."""
    url = f"spool://{tmp_path}/sp"
    assert run_python(SPOOL_WAITING.replace("sys.argv[1]", repr(url))).strip() == "ok"


PIPE_WAKER = """
import os, select, signal, sys, ipcwire

ECHO = "import ipcwire\\nch = ipcwire.stdio()\\nfor m in ch: ch.send(m)"
lst = ipcwire.listen(sys.argv[1])
reader = lst.accept(timeout=10)
writer = ipcwire.connect(lst.url, timeout=10)
child = ipcwire.spawn([sys.executable, "-c", ECHO])
wakers = [ch._stream._waker.fd for ch in (reader, writer, child)]
pid = os.fork()
if pid == 0:
    signal.alarm(10)  # a hang in the child fails the test
    for ch in (reader, writer, lst, child):
        ch.close()
    os._exit(0)
_, status = os.waitpid(pid, 0)
assert status == 0, f"child status {status}"
woken = select.select(wakers, [], [], 0)[0]
assert not woken, f"the child's close signalled the parent's wakers {woken} (waits would spin)"
writer.send(b"after the fork")
assert reader.recv(timeout=10) == b"after the fork"
child.send({"n": 1})
assert child.recv(timeout=10) == {"n": 1}
for ch in (reader, writer, lst, child):
    ch.close()
print("ok")
"""


def test_a_forked_child_closing_pipe_channels_does_not_wake_the_parents(tmp_path: Path) -> None:
    """fifo and spawn channels (FdStream): the child's close wrote the waker eventfd it shares
    with the parent, which nobody reads: a parent thread waiting in recv() or send() then
    found it readable on every poll, and spun at full CPU until a message came."""
    url = f"fifo://{tmp_path}/f.fifo"
    assert run_python(PIPE_WAKER.replace("sys.argv[1]", repr(url))).strip() == "ok"

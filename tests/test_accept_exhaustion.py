"""A listener out of file descriptors says so once per retry and serves again afterwards.

When ``accept()`` fails for want of descriptors, the client stays in the kernel's backlog
and the listening socket stays readable. A listener must neither spin nor flood its log, and
must serve the waiting client once descriptors are free again. A probe of every mechanism
found the asyncio listeners built on ``loop.create_server`` (unix, tcp, ws, http, sse; the
blocking http and sse listeners run one in a thread) logging about 6,000 tracebacks a second
for as long as the shortage lasted: CPython's selector loop, up to 3.13, goes on calling
``accept()`` after the failure in the same pass (python/cpython#151615), logging and
scheduling a retry each time. Each case runs in a fresh interpreter with a low descriptor
limit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests._proc import run_python

CHILD = """
import asyncio, logging, os, resource, socket, urllib.parse
from ipcwire import aio

URL = {url!r}
failures = []
first = None  # an asyncio.Event, set at the first failure


class Count(logging.Handler):
    def emit(self, record):
        if "out of system resource" in record.getMessage():
            failures.append(record.exc_info[1] if record.exc_info else None)
            first.set()  # (logged from the loop's own thread)


logging.getLogger("asyncio").addHandler(Count())
logging.getLogger("asyncio").propagate = False


async def handler(ch):
    if URL.startswith("sse"):
        await ch.send(b"hello")  # (server to client only)
        return
    async for msg in ch:
        await ch.send(msg)


def raw_client(url):
    u = urllib.parse.urlsplit(url)
    if u.scheme == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        return s, u.path
    return socket.socket(), (u.hostname, u.port)


async def main():
    global first
    first = asyncio.Event()
    async with await aio.listen(URL) as lst:
        serving = asyncio.ensure_future(lst.serve(handler))
        pending, address = raw_client(lst.url)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 64, hard))
        held = []
        try:
            while True:
                held.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        pending.connect(address)  # queued by the kernel; the listener cannot accept it
        await asyncio.wait_for(first.wait(), 20)
        # the failure is logged inside the loop's accept callback: by the time this task runs
        # again, that pass is over and everything it logged is in
        await asyncio.sleep(0)
        print(len(failures))
        print(str(failures[0]))
        for fd in held:
            os.close(fd)
        pending.close()
        async with await aio.connect(lst.url, timeout=20) as c:
            if URL.startswith("sse"):
                print(await c.recv(timeout=20))
            else:
                print(await c.request(b"served again", timeout=20))
        serving.cancel()


asyncio.run(main())
"""

URLS = {
    "unix": "unix://{d}/s.sock",
    "tcp": "tcp://127.0.0.1:0",
    "ws": "ws://127.0.0.1:0/x",
    "http": "http://127.0.0.1:0/x",
    "sse": "sse+http://127.0.0.1:0/x",
}


@pytest.mark.parametrize("kind", sorted(URLS))
def test_asyncio_listener_out_of_descriptors_logs_once_per_retry(kind: str, tmp_path: Path) -> None:
    url = URLS[kind].format(d=tmp_path)
    out = run_python(CHILD.format(url=url), timeout=60).splitlines()
    count, message, reply = out[0], out[1], out[2]
    # before: one pass logged a traceback for every slot of the backlog (100 or 128)
    assert count == "1", f"{count} failures logged in one accepting pass"
    assert "out of file descriptors while accepting on" in message, message
    assert "ulimit -n" in message and "accepting again in 1 s" in message, message
    assert reply in ("b'served again'", "b'hello'"), reply


BLOCKING_CHILD = """
import asyncio, logging, os, resource, subprocess, sys, threading
import ipcwire
from ipcwire import aio

URL, AIO, ROOM, AWAITED = {url!r}, {aio!r}, {room!r}, {awaited!r}
records = []
first, second = threading.Event(), threading.Event()


class Count(logging.Handler):
    def emit(self, record):
        if AWAITED in record.getMessage():
            records.append(record.getMessage())
            (second if first.is_set() else first).set()


logging.getLogger("ipcwire").addHandler(Count())
logging.getLogger("ipcwire").propagate = False
box = []
ends = []  # asyncio: the loop and listener, to close it from here at the end
ready = threading.Event()
finished = threading.Semaphore(0)  # released once a channel is closed, server side


def serve():
    # one client at a time, each closed before the next (serve() would close in its own time)
    while True:
        try:
            ch = lst.accept()
        except ipcwire.ChannelClosed:
            return
        with ch:
            for msg in ch:
                ch.send(msg)
        finished.release()


async def aserve():
    async with await aio.listen(URL) as alst:
        box.append(alst.url)
        ends.append((asyncio.get_running_loop(), alst))
        ready.set()
        while True:
            ch = await alst.accept()
            async with ch:
                async for msg in ch:
                    await ch.send(msg)
            finished.release()


if AIO:
    threading.Thread(target=asyncio.run, args=(aserve(),), daemon=True).start()
else:
    lst = ipcwire.listen(URL)
    box.append(lst.url)
    threading.Thread(target=serve, daemon=True).start()
    ready.set()
ready.wait(20)
with ipcwire.connect(box[0], timeout=20) as c:  # what the listener opens once, opens here
    c.request(b"warm", timeout=20)
assert finished.acquire(timeout=20)  # and the server side let go of that channel
client = subprocess.Popen(
    [sys.executable, "-c", f'''
import sys, ipcwire
sys.stdin.readline()
try:
    with ipcwire.connect({{box[0]!r}}, timeout=20) as c:
        print(c.request(b"served again", timeout=20))
except ipcwire.IpcwireError as exc:
    print(type(exc).__name__, exc)
'''],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 64, hard))
held = []
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
for fd in held[len(held) - ROOM:]:
    os.close(fd)
del held[len(held) - ROOM:]
client.stdin.write("go\\n")
client.stdin.flush()
assert first.wait(20), "nothing logged"
# a listener that retries at once logs again within microseconds; one that pauses, not
# before its pause of a second is over
print(second.wait(0.5))
print(records[0])
for fd in held:
    os.close(fd)
print(client.communicate(timeout=30)[0].strip())
# closed before exiting: an mq listener left open leaves its queue in the kernel for good
if AIO:
    loop, alst = ends[0]
    asyncio.run_coroutine_threadsafe(alst.aclose(), loop).result(20)
else:
    lst.close()
"""


@pytest.mark.parametrize(
    "kind", ["unix", "tcp", "ws", "ws+unix", "shm", "shm-asyncio", "mq", "mq-asyncio"]
)
def test_listener_out_of_descriptors_pauses_then_serves(kind: str, tmp_path: Path) -> None:
    """Listeners that accept by themselves (blocking http and sse run the asyncio server of
    the test above in a thread): the blocking ws
    listener retried a failed accept at once, at 92% of a CPU and 100,000 log records a
    second; shm's did the same without a word (asyncio shm: 20 a second). An mq listener
    that could not open a client's queues called the client gone and dropped it, and the
    client waited out its timeout ("the listener is busy or gone")."""
    urls = {
        "unix": f"unix://{tmp_path}/s.sock",
        "tcp": "tcp://127.0.0.1:0",
        "ws": "ws://127.0.0.1:0/x",
        "ws+unix": f"ws+unix://{tmp_path}/w.sock",
        "shm": f"shm://ipcwemf-{tmp_path.name[-12:]}",
        "shm-asyncio": f"shm://ipcwemfa-{tmp_path.name[-12:]}",
        "mq": f"mq://ipcwemf-{tmp_path.name[-12:]}",
        "mq-asyncio": f"mq://ipcwemfa-{tmp_path.name[-12:]}",
    }
    code = BLOCKING_CHILD.format(
        url=urls[kind], aio=kind.endswith("asyncio"), room=0, awaited="out of file descriptors"
    )
    again, message, reply = run_python(code, timeout=60).splitlines()
    assert again == "False", "the listener retried at once"
    doing = "opening the queue" if kind.startswith("mq") else "while accepting on"
    assert "out of file descriptors" in message and doing in message, message
    assert "accepting again in 1 s" in message, message
    assert reply == "b'served again'", reply


@pytest.mark.parametrize("aio", [False, True])
def test_shm_listener_without_room_for_the_clients_memory_says_so(
    aio: bool, tmp_path: Path
) -> None:
    """Room to accept the connection but not the shared memory's descriptors that come over
    it: the kernel drops them and flags the message truncated, which the listener took for
    a peer sending too many ("the peer sent more file descriptors than expected"), and the
    client got a bare "Connection reset by peer". Both now say what ran out."""
    url = f"shm://ipcwctr-{tmp_path.name[-12:]}{int(aio)}"
    # (the asyncio listener may first fail to accept something else: wait for this one)
    code = BLOCKING_CHILD.format(url=url, aio=aio, room=1, awaited="could not be received")
    code = code.replace("print(second.wait(0.5))\n", "")
    message, reply = run_python(code, timeout=60).splitlines()
    assert "out of file descriptors" in message and "ulimit -n" in message, message
    assert reply.startswith("ResourceExhausted"), reply
    assert "could not take the connection" in reply and "out of file descriptors" in reply

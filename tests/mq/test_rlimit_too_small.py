"""An RLIMIT_MSGQUEUE (ulimit -q) too small for the queue asked for is ResourceExhausted (a
limit, as docs/errors.md lists it), naming the URL, the bytes needed and the fix, from listen()
and connect(), blocking and asyncio. Before, it was ConfigurationError, with the same text.
And mq's probe (``ipcwire platforms``, doctor's "mechanisms work here") says mq is unusable,
and why, when a listener and one channel do not fit in the limit; before: "available".
In children run as a uid of their own: the limit counts all of a user's queues, and root's or
nobody's (other tests', in the other pytest worker too) would use it up first; the
listener's queue for connect() is made before the limit drops."""

from __future__ import annotations

from collections.abc import Callable

from tests._proc import run_python

CHILD = """
import asyncio, resource, ipcwire
from ipcwire import aio
from ipcwire.mq import probe

URL = {url!r}
OTHER = {other!r}  # (listened at while the limit is low)

def show(what, attempt):
    try:
        attempt()
        print(what, "OK")
    except Exception as exc:
        print(what, type(exc).__name__, getattr(exc, "endpoint", None), "|", exc)

async def aio_listen():
    await (await aio.listen(OTHER)).aclose()

async def aio_connect():
    await (await aio.connect(URL, timeout=2)).aclose()

listener = ipcwire.listen(URL)  # its queue made while the limit allows it
soft, hard = resource.getrlimit(resource.RLIMIT_MSGQUEUE)
resource.setrlimit(resource.RLIMIT_MSGQUEUE, (8192, hard))
print("probe |", probe())
show("listen", lambda: ipcwire.listen(OTHER).close())
show("aio.listen", lambda: asyncio.run(aio_listen()))
show("connect", lambda: ipcwire.connect(URL, timeout=2).close())
show("aio.connect", lambda: asyncio.run(aio_connect()))
resource.setrlimit(resource.RLIMIT_MSGQUEUE, (soft, hard))
listener.close()
print("probe |", probe())
"""


def test_too_small_rlimit_is_resource_exhausted(mq_url: Callable[..., str]) -> None:
    url, other = mq_url(), mq_url()
    out = run_python(CHILD.format(url=url, other=other), as_uid=64997).splitlines()
    assert out[0].startswith("probe | RLIMIT_MSGQUEUE (ulimit -q) is 8192 bytes"), out[0]
    assert "every listen() fails" in out[0] and "ulimit -q 819200" in out[0], out[0]
    for line, what in zip(
        out[1:5], ("listen", "aio.listen", "connect", "aio.connect"), strict=True
    ):
        want = other if "listen" in what else url
        assert line.startswith(f"{what} ResourceExhausted {want} | "), line
        assert "over this user's RLIMIT_MSGQUEUE of 8192 bytes" in line, line
        assert f" for {want} needs about " in line and "ulimit -q" in line, line
    assert out[5] == "probe | None", out

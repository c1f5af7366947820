"""The URL's query sets options; a name no option reads is refused, before anything opens.

Before, a misspelt query parameter (``?codc=json``, ``?tiemout=3``) or a keyword-only option
put in the query (``?unary=1`` on grpc) was ignored without a word: the channel ran with the
default, and a test of this project believed it ran gRPC's unary mode for months. And the
docs promised that the query sets connect's ``timeout`` too, which it did not.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ipcwire
import ipcwire._api
import ipcwire.aio
from ipcwire._core.url import Endpoint, QueryParams, parse_url
from ipcwire.errors import ConfigurationError, ConnectionRefused
from ipcwire.registry import lookup


def test_a_misspelt_parameter_is_refused_and_nothing_is_created(tmp_path: Path) -> None:
    sock = tmp_path / "s.sock"
    with pytest.raises(ConfigurationError) as info:
        ipcwire.listen(f"unix://{sock}?codc=json&tiemout=3")
    text = str(info.value)
    assert "unknown query parameter(s) codc, tiemout" in text
    assert "codec" in text and "keyword argument" in text
    assert info.value.endpoint == f"unix://{sock}?codc=json&tiemout=3"
    assert not sock.exists()
    with pytest.raises(ConfigurationError, match="unknown query parameter"):
        ipcwire.connect(f"unix://{sock}?codc=json", timeout=1)


def test_a_keyword_only_option_in_the_query_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"unary.*keepalive"):
        ipcwire.connect("grpc://127.0.0.1:9?unary=1")


def test_asyncio_refuses_the_same(tmp_path: Path) -> None:
    async def main() -> None:
        with pytest.raises(ConfigurationError, match="unknown query parameter"):
            await ipcwire.aio.listen(f"unix://{tmp_path}/s.sock?codc=json")
        with pytest.raises(ConfigurationError, match="unknown query parameter"):
            await ipcwire.aio.connect(f"unix://{tmp_path}/s.sock?codc=json")

    asyncio.run(main())


def test_the_query_sets_connects_timeout_and_reconnect(tmp_path: Path) -> None:
    """``?reconnect=`` keeps trying until the server is up; ``?timeout=`` must be a number."""
    url = f"unix://{tmp_path}/late.sock"
    with pytest.raises(ConfigurationError, match="timeout='soon'"):
        ipcwire.connect(f"{url}?timeout=soon")
    with pytest.raises(ConnectionRefused):
        ipcwire.connect(f"{url}?reconnect=0")  # refused at once, as reconnect=0 is
    up = threading.Event()
    box: list[Any] = []

    def serve() -> None:
        up.wait(10)
        with ipcwire.listen(url) as lst:
            box.append(lst.accept(timeout=10))

    t = threading.Thread(target=serve)
    t.start()
    try:
        dialing = threading.Thread(
            target=lambda: box.append(ipcwire.connect(f"{url}?reconnect=20&timeout=20"))
        )
        dialing.start()
        up.set()  # the server comes up while the client is being refused (or before)
        dialing.join(30)
        t.join(30)
    finally:
        up.set()
        t.join(30)
    assert len(box) == 2
    for ch in box:
        ch.close()


def _urls(d: Path) -> dict[str, str]:
    name = f"ipcwq{uuid.uuid4().hex[:8]}"
    return {
        "unix": f"unix://{d}/u.sock",
        "tcp": "tcp://127.0.0.1:0",
        "fifo": f"fifo://{d}/f",
        "shm": f"shm://{name}",
        "mq": f"mq://{name}",
        "spool": f"spool://{d}/q",
        "ws": "ws://127.0.0.1:0/x",
        "http": "http://127.0.0.1:0",
        "grpc": "grpc://127.0.0.1:0",
        "sse+http": "sse+http://127.0.0.1:0/e",
        "udp": "udp://127.0.0.1:0",
    }


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Endpoint]]:
    """The endpoints connect() and listen() parse, their queries remembering what the
    mechanism asked for."""
    seen: list[Endpoint] = []

    def parse(url: str) -> Endpoint:
        ep = parse_url(url)
        seen.append(ep)
        return ep

    monkeypatch.setattr(ipcwire._api, "parse_url", parse)
    yield seen


@pytest.mark.parametrize("kind", sorted(_urls(Path("/"))))
def test_every_name_a_mechanism_reads_from_the_query_is_declared(
    kind: str, tmp_path: Path, asked: list[Endpoint]
) -> None:
    """The declared ``query_options`` cover every name the mechanism's listen, connect and
    accept ask the query for (else a valid URL would be refused)."""
    spec = lookup(kind)
    with ipcwire.listen(_urls(tmp_path)[kind]) as lst:
        box: list[Any] = []
        t = threading.Thread(target=lambda: box.append(lst.accept(timeout=10)))
        t.start()
        with ipcwire.connect(lst.url, timeout=10) as ch:
            if kind == "udp":
                ch.send(b"x")  # a udp listener accepts a peer at its first datagram
            t.join(20)
            box[0].close()
    accepted = {"codec", "framing", "max_frame", "token", "handshake_timeout"}
    accepted |= {"timeout", "reconnect", *spec.query_options}
    assert len(asked) == 2
    for ep in asked:
        assert isinstance(ep.params, QueryParams)
        assert ep.params.asked <= accepted, ep.params.asked - accepted


@pytest.mark.parametrize(
    "call",
    [
        lambda d: ipcwire.listen(f"unix://{d}/s.sock", codec="pickle"),
        lambda d: ipcwire.listen(f"unix://{d}/s.sock", codec="yaml"),
        lambda d: ipcwire.listen(f"unix://{d}/s.sock", codec=object()),  # type: ignore[arg-type]
        lambda d: ipcwire.listen(f"unix://{d}/s.sock", bogus=1),
        lambda d: ipcwire.listen(f"unix://{d}/s.sock", token=""),
        lambda d: ipcwire.listen(f"unix://{d}/s.sock", framing="xml"),
        lambda d: ipcwire.listen(f"unix://{d}/s.sock", mode=0o4755),
        lambda d: ipcwire.connect(f"unix://{d}/s.sock", timeout=-1),
        lambda d: ipcwire.connect("tcp://127.0.0.1:70000"),
        lambda d: ipcwire.connect("sse://127.0.0.1:9/events"),
    ],
)
def test_an_option_error_names_its_endpoint(call: Any, tmp_path: Path) -> None:
    """errors.md promises ``err.endpoint``; these said None (and mode=0o4755 said 2541; and
    token="" was taken for no token at all: a channel without authentication)."""
    with pytest.raises((ConfigurationError, ipcwire.InvalidURL)) as info:
        call(tmp_path)
    assert info.value.endpoint is not None and info.value.endpoint in str(info.value)
    assert "2541" not in str(info.value)


def test_an_unknown_scheme_suggests_the_nearest() -> None:
    with pytest.raises(ipcwire.InvalidURL, match=r"did you mean sse\+http:\?"):
        ipcwire.connect("sse://127.0.0.1:9/events")
    with pytest.raises(ipcwire.InvalidURL, match="did you mean unix:"):
        ipcwire.listen("unx:///tmp/x.sock")

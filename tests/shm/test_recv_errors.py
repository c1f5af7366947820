"""Blocking shm receives fail in every mechanism's words, on both rings (C and pure Python):
threads receiving at once take turns, and one whose time ran out while another received says
which timeout and why; a receive's Timeout says its timeout ("within 0.5 s", "yet" for 0);
timeout=nan is a ConfigurationError naming the endpoint. Before, the ring raised ``Timeout:
URL: another thread's call on this channel did not finish in time``, ``no message from URL
within the timeout`` and a bare ``ValueError: timeout must not be NaN``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from tests._proc import wait_until

import ipcwire
from ipcwire.errors import ConfigurationError, Timeout
from ipcwire.shm import _ring
from ipcwire.shm.blocking import ShmChannel

IMPLS = _ring.available()


@contextmanager
def pair(
    shm_url: Callable[[], str], impl: str, monkeypatch: pytest.MonkeyPatch, codec: str = "bytes"
) -> Iterator[tuple[ShmChannel, ShmChannel]]:
    """A connected (client, server) pair whose rings are ``impl``'s."""
    monkeypatch.setattr(_ring, "IMPLEMENTATION", impl)  # which ring new links attach
    url = shm_url()
    with ipcwire.listen(url, codec=codec) as listener:
        client = ipcwire.connect(url, codec=codec, timeout=5)
        server = listener.accept(timeout=5)
    assert isinstance(client, ShmChannel) and isinstance(server, ShmChannel)
    assert (type(client._rx).__name__ == "Ring") == (impl == "c")
    with client, server:
        yield client, server


@pytest.mark.parametrize("impl", IMPLS)
def test_a_far_deadline_still_ends_the_wait_on_time(
    shm_url: Callable[[], str], impl: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A timed park whose deadline is more than 50 ms away first sleeps in the doorbell's
    recv, as an untimed one does (ring.c, RECV_FIRST_NS); that recv gives up after 10 ms of
    timer ticks, and the rest is waited in ppoll: the Timeout comes at the deadline, neither
    before it nor a recv timeout after another."""
    with pair(shm_url, impl, monkeypatch) as (client, server):
        for policy in ("park", "hybrid"):
            client.wait_policy = policy
            began = time.monotonic()
            with pytest.raises(Timeout, match=r"within 0\.3 s$"):
                client.recv(timeout=0.3)
            took = time.monotonic() - began
            assert 0.3 <= took < 0.8, took
        server.send(b"still there")  # and the channel works on
        assert client.recv(timeout=5) == b"still there"


@pytest.mark.parametrize("codec", ["bytes", "json"])  # (bytes: the ring's own recv, bound)
@pytest.mark.parametrize("impl", IMPLS)
def test_receive_timeout_says_the_timeout(
    shm_url: Callable[[], str], impl: str, codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pair(shm_url, impl, monkeypatch, codec) as (client, _):
        with pytest.raises(Timeout) as timed:
            client.recv(timeout=0.05)
        assert str(timed.value) == f"no message from {client.url} within 0.05 s"
        with pytest.raises(Timeout) as now:
            client.recv(timeout=0)
        assert str(now.value) == f"no message from {client.url} yet"
        with pytest.raises(Timeout) as many:
            client.recv_many(timeout=0.05)
        assert str(many.value) == f"no message from {client.url} within 0.05 s"
        with pytest.raises(Timeout) as view:
            client.recv_view(timeout=0)
        assert str(view.value) == f"no message from {client.url} yet"


@pytest.mark.parametrize("impl", IMPLS)
def test_timeout_nan_is_a_configuration_error(
    shm_url: Callable[[], str], impl: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    nan = float("nan")
    with pair(shm_url, impl, monkeypatch) as (client, server):
        for call in (
            lambda: client.recv(timeout=nan),
            lambda: client.recv_many(timeout=nan),
            lambda: client.recv_view(timeout=nan),
            lambda: client.send(b"x", timeout=nan),
            lambda: client.send_many([b"x"], timeout=nan),
        ):
            with pytest.raises(ConfigurationError) as err:
                call()
            assert f"timeout=nan for {client.url} is not a number of seconds" in str(err.value)
            assert err.value.endpoint == client.url
        client.send(b"still usable", timeout=5)  # nothing was sent, nothing is broken
        assert server.recv(timeout=5) == b"still usable"


@pytest.mark.parametrize("impl", IMPLS)
def test_threads_receiving_at_once_take_turns(
    shm_url: Callable[[], str], impl: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on unix, tcp, mq, ws and grpc (and the conformance suite's threads receiving at
    once): a second thread waits for its turn, within its own timeout, and its Timeout says
    why it got nothing; the first thread still gets the message."""
    with pair(shm_url, impl, monkeypatch) as (client, server):
        got: list[bytes] = []
        first = threading.Thread(target=lambda: got.append(client.recv(timeout=30)))
        first.start()
        try:
            rx = client._rx
            # the first thread is inside its receive (the ring's call is running)
            in_use = (lambda: rx._in_use) if impl == "python" else (lambda: _busy(rx))  # type: ignore[attr-defined]
            assert wait_until(in_use, 10)
            start = time.monotonic()
            with pytest.raises(Timeout) as second:
                client.recv(timeout=0.2)
            took = time.monotonic() - start
            assert str(second.value) == (
                f"no message from {client.url} within 0.2 s: another thread was receiving on "
                f"this channel meanwhile (receives take turns)"
            )
            assert second.value.endpoint == client.url
            assert 0.15 < took < 5  # its own timeout, not the other thread's
            with pytest.raises(Timeout, match=r"yet: another thread was receiving"):
                client.recv(timeout=0)
        finally:
            server.send(b"one", timeout=5)
            first.join(10)
        assert got == [b"one"]


def _busy(ring: object) -> bool:
    """Whether a call runs on this C ring end: a receive that does not wait fails at once
    with the turn-taking words then (there is no attribute to read)."""
    try:
        ring.recv(0)  # type: ignore[attr-defined]
    except Timeout as exc:
        return "another thread" in str(exc)
    raise AssertionError("a message arrived")

"""The zero-copy snippets of docs/mechanisms/shm.md work for ordinary numpy frames, and a loan
whose filling failed cannot go unnoticed.

The page's first snippet was ``buf = ch.loan(n); buf[:] = payload; ch.send_loan()``: for a
float32 2-D frame or a non-contiguous uint8 one, the assignment raises ``ValueError``, and the
loan stayed open, so the next ``send()`` was a ``LocalProtocolError`` that said "commit or
abort it first" (neither is a method of the channel).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ipcwire

from ._util import IMPLS, ring_pair
from .test_failure import pair

PAGE = Path(__file__).parent.parent.parent / "docs" / "mechanisms" / "shm.md"


def _numpy_block() -> str:
    text = PAGE.read_text()
    section = text[text.index("## Zero copy") : text.index("## Wait policies")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    (code,) = [b for b in blocks if "import numpy" in b]
    return str(code)


def _frames() -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(7)
    u8 = rng.integers(0, 255, (1080, 1920 * 3), dtype=np.uint8)
    return {
        "float32 2-D": rng.random((1080, 1920), dtype=np.float32),
        "uint8, not contiguous": u8[:, ::3],
        "float64, Fortran order": np.asfortranarray(rng.random((700, 900))),
        "int16 3-D": rng.integers(-500, 500, (4, 480, 640), dtype=np.int16),
    }


@pytest.mark.parametrize("name", list(_frames()))
def test_the_numpy_snippet_sends_ordinary_frames(shm_url: Callable[[], str], name: str) -> None:
    """The page's numpy block as written (its own frame, then each of these in its place),
    between two real channels: the receiver's array is the sender's, and the channel is
    usable afterwards."""
    code = _numpy_block()
    frame = _frames()[name]
    with pair(shm_url(), capacity="16M") as (ch, other):
        for a in (None, frame):
            ns: dict[str, Any] = {"ch": ch, "other": other}
            if a is None:
                exec(code, ns)
            else:
                ns["frame"] = a
                exec(re.sub(r"(?m)^a = .*$", "a = frame", code, count=1), ns)
            want = ns["a"]
            assert ns["total"] == pytest.approx(float(want.sum()), rel=1e-4)
            ch.send(b"after")  # no loan was left open
            assert other.recv(timeout=10) == b"after"


def test_a_failed_fill_in_loaned_sends_nothing_and_leaves_no_loan(
    shm_url: Callable[[], str],
) -> None:
    """What the user wrote, inside ``loaned()``: the assignment fails, nothing is sent, the
    channel goes on."""
    a = np.zeros((512, 512), np.float32)
    with pair(shm_url(), capacity="4M") as (ch, other):
        with pytest.raises(ValueError, match="different structures"), ch.loaned(a.nbytes) as buf:
            buf[:] = a  # type: ignore[call-overload]
        ch.send(b"next")
        assert other.recv(timeout=10) == b"next"


@pytest.mark.parametrize("impl", IMPLS)
def test_a_loan_left_open_says_how_to_end_it(impl: str) -> None:
    """A bare ``loan()`` whose filling raised: ``send()`` and ``loan()`` are refused, naming
    the channel's methods that end the loan and ``loaned()``; after ``abort_loan()`` (the
    ring's ``abort``) the channel works."""
    tx, rx, _mm = ring_pair(1 << 16, producer=impl, consumer=impl)
    a = np.zeros((64, 64), np.float32)
    buf = tx.loan(a.nbytes, 5)
    with pytest.raises(ValueError, match="different structures"):
        buf[:] = a  # type: ignore[call-overload]
    for refused in (lambda: tx.send(b"x", 5), lambda: tx.loan(16, 5)):
        with pytest.raises(ipcwire.LocalProtocolError) as info:
            refused()
        text = str(info.value)
        assert "send_loan()" in text and "abort_loan()" in text and "loaned(" in text
    tx.abort()
    tx.send(b"x", 5)
    assert rx.recv(5) == b"x"
    tx.close()
    rx.close()


def test_the_channel_classes_are_public_for_type_checkers(shm_url: Callable[[], str]) -> None:
    """The page's typing snippet: ``from ipcwire.shm import ShmChannel`` and an isinstance
    narrow make ``loaned()``/``recv_view()`` type-check under ``mypy --strict`` (which the
    test command runs on this file) without a private import; the asyncio class too."""
    from ipcwire.aio import AioChannel
    from ipcwire.shm import AioShmChannel, ShmChannel

    assert issubclass(AioShmChannel, AioChannel)
    with (
        ipcwire.listen(shm_url()) as lst,
        ipcwire.connect(lst.url, timeout=10) as ch,
        lst.accept(timeout=10) as other,
    ):
        assert isinstance(ch, ShmChannel) and isinstance(other, ShmChannel)
        with ch.loaned(3) as buf:
            buf[:] = b"abc"
        view = other.recv_view(timeout=10)
        assert bytes(view) == b"abc"
        other.release_view()

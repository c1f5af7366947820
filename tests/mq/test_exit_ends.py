"""A program that ends with its blocking mq channel open (a module global) ends it cleanly.

Its channel is collected while the interpreter finalizes, and a collected channel tells its
peer it was dropped: the server got every message and then ``ChannelBroken`` ("ended the
channel after an error on its side (dropped without close(), garbage-collected)"), where a
Unix socket's server sees the process's exit as a clean end. Now the end at interpreter exit
is clean (``EndOfChannel``); a channel dropped while the program runs is still reported so
(tests/mq/test_dropped_channel.py).
"""

from __future__ import annotations

from collections.abc import Callable

from tests._exit import program_ends

from ipcwire.errors import EndOfChannel

COUNT = 20


def test_a_program_that_ends_with_its_channel_open_ends_it_cleanly(
    mq_url: Callable[..., str],
) -> None:
    _, got, end = program_ends(mq_url("maxmsg=2"), count=COUNT, size=1024)
    assert got == list(range(COUNT))
    assert isinstance(end, EndOfChannel), end

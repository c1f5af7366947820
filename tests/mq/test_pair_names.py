"""A channel's pair of queues and its end pipe are named with at least 64 random bits (a
process on the machine that guesses the name of a client's end pipe or queues can make them
first), within the length limits of both: a queue name (255 bytes) and the end pipe's file
name (ipcwire-mq.<tag>.end, 255 bytes), for every channel name mq:// accepts."""

from __future__ import annotations

import os

from ipcwire.mq._ends import end_pipe_path
from ipcwire.mq._proto import pair_names
from ipcwire.mq._queue import CHANNEL_NAME_MAX, NAME_MAX


def _random_part(up: str) -> str:
    tag = up.removesuffix(".up")
    _, pid, rand = tag.rsplit(".", 2)
    assert pid == str(os.getpid())  # ipcwire doctor finds a crashed client's queues by it
    return rand


def test_at_least_64_random_bits_at_every_name_length() -> None:
    for length in range(1, CHANNEL_NAME_MAX + 1):
        base = "/" + "n" * length
        up, dn = pair_names(base)
        assert dn == up.removesuffix(".up") + ".dn"
        rand = _random_part(up)
        assert len(rand) * 4 >= 64 and int(rand, 16) >= 0, (length, up)
        assert up.startswith((base + ".", "/ipcwire."))
        assert len(up.encode()) <= NAME_MAX and len(dn.encode()) <= NAME_MAX
        assert len(os.path.basename(end_pipe_path(up)).encode()) <= NAME_MAX


def test_names_do_not_repeat() -> None:
    names = {pair_names("/app")[0] for _ in range(1000)}
    assert len(names) == 1000

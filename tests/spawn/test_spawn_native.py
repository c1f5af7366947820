"""spawn() on the C paths of the fd channels (``_ext/stream.c`` in fd mode) and on the
Python paths: waits with no timeout that only the child's pidfd or close() can end. The
blocking calls run in threads joined with a bound, so a lost wake-up fails instead of hangs."""

from __future__ import annotations

import pytest
from tests._threads import finished, in_thread

from ipcwire.errors import ChannelClosed, EndOfChannel
from ipcwire.spawn import spawn

from ._util import reaped, wait_dead


def test_a_child_that_exits_while_a_grandchild_holds_stdout_ends_the_wait(impl: str) -> None:
    # The parent waits with no timeout; only the child's pidfd can end it (the grandchild
    # keeps the pipe open): the C path's poll watches it too.
    script = "sleep 3600 & printf '\\000\\000\\000\\010%08d' $!; exit 0"
    ch = spawn(["sh", "-c", script], framing="length", codec="bytes")
    try:
        grandchild = int(ch.recv())
        t, box = in_thread(ch.recv)
        assert finished(t)
        assert isinstance(box[0], EndOfChannel)
        assert "exited with code 0" in str(box[0])
    finally:
        ch.close()
    assert reaped(ch.pid)
    assert wait_dead(grandchild)


def test_a_spawned_childs_channel_refuses_to_send_once_closed(impl: str) -> None:
    child = ["sh", "-c", "cat"]
    ch = spawn(child, framing="length", codec="bytes")
    ch.send(b"ping")
    assert ch.recv() == b"ping"
    assert (getattr(ch, "_fast_send", None) is not None) is (impl == "c")
    ch.close()
    with pytest.raises(ChannelClosed):
        ch.send(b"after close")
    with pytest.raises(ChannelClosed):
        ch.recv()
    assert reaped(ch.pid)

"""accept() on a spool listener while another thread closes it: accept either hands out a
channel that works, or says ChannelClosed; close() raises nothing. Lined up by pausing the
threads at lines of the real code (no sleeps)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests._pause import PauseAt

import ipcwire
from ipcwire.errors import ChannelClosed
from ipcwire.spool._channel import ListenerCore
from ipcwire.spool._store import SpoolStore
from ipcwire.spool.blocking import SpoolChannel, SpoolListener


def test_accept_while_another_thread_closes_the_listener(spool_dir: Path) -> None:
    url = f"spool://{spool_dir}/q"
    listener = ipcwire.listen(url)
    assert isinstance(listener, SpoolListener)
    # accept has found the listener open and stops where it takes the spool's store
    accepting = PauseAt(ListenerCore._take_store, "self._store")
    accepting.start(lambda: listener.accept(timeout=5))
    accepting.wait_reached()
    # close() stops as it closes that store
    closing = PauseAt(SpoolStore.close, "with self._state_lock:")
    closing.start(listener.close)
    closing.wait_reached()
    try:
        ch = accepting.join()
    except ChannelClosed:
        ch = None
    closing.join()  # raises nothing
    if ch is not None:  # before the fix: a channel whose store close() then closed
        assert isinstance(ch, SpoolChannel)
        with ch:
            ch.send(b"still works")
            assert ch.recv(timeout=5) == b"still works"
    with pytest.raises(ChannelClosed):
        listener.accept(timeout=0)

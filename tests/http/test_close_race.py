"""close() in one thread while another thread's send() is about to make its request: the
send raised httpx's bare ``RuntimeError`` ("Cannot send a request, as the client has been
closed"), and with a session the channel's own sender thread died with that traceback (a
probe of close() racing sends on every mechanism: only http failed). Now ``ChannelClosed``,
as every mechanism says after close(). The sending thread is stopped at the request line of
the real code while the other closes (tests/_pause.py)."""

from __future__ import annotations

import threading

import pytest
from tests._pause import PauseAt

import ipcwire
from ipcwire.errors import ChannelClosed
from ipcwire.http._blocking_client import HttpChannel


def test_a_send_cut_by_close_says_channel_closed() -> None:
    with ipcwire.listen("http://127.0.0.1:0/x") as lst:
        served = threading.Thread(target=lst.serve, args=(list,), daemon=True)
        served.start()
        ch = ipcwire.connect(lst.url, session=False, timeout=10)
        gate = PauseAt(HttpChannel._do, "return self._client.request(")
        gate.start(ch.send, b"cut")
        assert gate.reached.wait(10)
        ch.close()  # (nothing queued to flush: it closes the HTTP client at once)
        gate.go()
        with pytest.raises(ChannelClosed):
            gate.join()
